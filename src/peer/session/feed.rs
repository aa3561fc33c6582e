//! The media tasks of one session: hub subscription → RTP packets on the session's
//! tracks; for video, the viewer's PLI/FIR → coalesced keyframe requests, and its
//! bandwidth estimate → a switch between the ladder's rungs at an IDR.

use super::rtp::RtpClock;
use crate::media::Frame;
use crate::media::MediaKind;
use crate::media::hub::Subscription;
use crate::peer::adapt::{LadderRung, RungChooser, video_share_bps};
use crate::peer::budget::{FrameBudget, Verdict};
use crate::peer::bwprobe::{ProbeLink, ProbeRequest};
use crate::peer::pace::Pacer;
use crate::peer::stats::{LatencyHistogram, SessionStats};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal as _;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::rtp_transceiver::RtpSender;

/// RTP packet size budget, bytes: fits the 1280-byte IPv6 minimum MTU with SRTP and
/// TURN overhead, as browsers do.
const RTP_MTU: usize = 1200;

/// What lets a video feed follow its viewer: the ladder it may switch between (one
/// rung: no switching), the viewer's bandwidth estimate, and its PLI/FIR.
pub(super) struct Adapt {
    /// A subscription to the ladder's first rung, taken early so that its encoder (if
    /// it starts on demand) warms up while the connection is set up.
    pub first: Subscription,
    /// Highest first; the feed starts on the first.
    pub ladder: Vec<LadderRung>,
    /// How many of the ladder's lowest rungs are withheld (`media::shed`); `None` for a
    /// ladder that is never shrunk (the VP8 rung).
    pub withheld: Option<watch::Receiver<usize>>,
    /// GCC's target, bits per second.
    pub estimate: watch::Receiver<f64>,
    /// One `()` per PLI/FIR (coalesced by `peer::feedback`).
    pub keyframe_requests: mpsc::Receiver<()>,
    /// One `()` per `keyframe` command on the control channel.
    pub control_keyframes: mpsc::Receiver<()>,
    /// Where probes are asked for and their results come back.
    pub probes: Arc<ProbeLink>,
}

/// How often a feed on a lower rung checks whether a probe is due.
const PROBE_CHECK: Duration = Duration::from_millis(250);

/// The subscription frames come from now, and the one a switch waits on.
struct Rungs {
    /// The whole ladder.
    full: Vec<LadderRung>,
    /// How many of its rungs are offered now (all but the withheld lowest ones).
    offered: usize,
    /// The viewer negotiated RTX and TWCC.
    can_probe: bool,
    current: (usize, Subscription),
    /// Target rung and its subscription, until its first frame (an IDR) arrives.
    pending: Option<(usize, Subscription)>,
    chooser: RungChooser,
    /// Held below the lowest rung (the chooser's keyframes-only level).
    below: bool,
    /// Below the lowest rung: keyframes only, as the estimate allows.
    budget: FrameBudget,
    /// The last estimate, bits per second.
    estimate_bps: Option<f64>,
    /// Spreads IDRs over time at a multiple of the estimate.
    pacer: Pacer,
}

impl Rungs {
    /// The rungs offered now: a prefix of the whole ladder.
    fn ladder(&self) -> &[LadderRung] {
        &self.full[..self.offered]
    }

    /// Rung `i` of the whole ladder, for logs: `low 640x360`.
    fn rung_name(&self, i: usize) -> String {
        self.full.get(i).map_or_else(String::new, |r| {
            format!("{} {}x{}", r.name, r.width, r.height)
        })
    }

    /// Level `i` of the ladder offered now, for logs and stats: a rung, or
    /// `low 640x360 (keyframes only)` below them.
    fn describe(&self, i: usize) -> String {
        if i < self.offered {
            self.rung_name(i)
        } else {
            format!(
                "{} (keyframes only)",
                self.rung_name(self.offered.saturating_sub(1))
            )
        }
    }

    /// The level sent now: the current rung, or the keyframes-only level below them.
    fn level(&self) -> usize {
        if self.below {
            self.offered
        } else {
            self.current.0
        }
    }

    /// Gives the budget the viewer's video share of the estimate while it is held
    /// below the lowest rung; no budget otherwise.
    fn update_budget(&mut self, now: Instant) {
        let rate = match self.estimate_bps {
            Some(bps) if self.below => video_share_bps(bps),
            _ => f64::INFINITY,
        };
        self.budget.set_rate(now, rate);
    }

    /// Offers the viewer all but the `withheld` lowest rungs. A viewer on a rung that
    /// stays stays. One on a rung that is gone, or held below the lowest rung, goes to
    /// the keyframes of the lowest rung offered now, from where a probe can lift it at
    /// once (its estimate says little about rates it has not sent: GCC's target climbs
    /// on any underused link); a viewer that cannot be probed goes where its estimate
    /// points, as it always does.
    fn set_withheld(&mut self, withheld: usize, now: Instant) {
        let len = offered(self.full.len(), withheld);
        if len == self.offered {
            return;
        }
        self.offered = len;
        self.chooser = chooser(self.ladder(), self.can_probe);
        let level = if !self.below && self.current.0 < len {
            self.current.0
        } else if self.can_probe {
            len
        } else {
            self.chooser.level_for(self.estimate_bps.unwrap_or(0.0))
        };
        log::info!(
            "{} rung(s) offered now: to the {} rung",
            len,
            self.describe(level)
        );
        self.chooser.reset_to(level);
        self.begin_switch(level, now);
    }

    /// Starts a switch to level `to` (a rung, or `ladder.len()`: the lowest rung's
    /// keyframes only): subscribes to the rung and asks it for an IDR, at which the
    /// feed switches (or cancels a pending switch when `to` is the current rung).
    fn begin_switch(&mut self, to: usize, now: Instant) {
        self.below = to >= self.offered;
        let rung = to.min(self.offered.saturating_sub(1));
        if rung == self.current.0 {
            self.pending = None;
        } else if let Some(r) = self.ladder().get(rung) {
            let sub = r.hub.subscribe();
            sub.request_keyframe();
            self.pending = Some((rung, sub));
        }
        self.update_budget(now);
    }
}

/// How many rungs of a ladder of `len` are offered with the `withheld` lowest ones
/// withheld: never fewer than one (the main rung is never withheld).
fn offered(len: usize, withheld: usize) -> usize {
    len.saturating_sub(withheld).max(1).min(len)
}

/// A chooser over `ladder`, switching up by probes when `can_probe`.
fn chooser(ladder: &[LadderRung], can_probe: bool) -> RungChooser {
    let bitrates: Vec<u32> = ladder.iter().map(|r| r.bitrate_kbps).collect();
    let mut chooser = RungChooser::new(&bitrates);
    chooser.set_probing(can_probe);
    chooser
}

/// The next request on `rx`; never once its senders are gone (then `rx` is `None`).
async fn next_request(rx: &mut Option<mpsc::Receiver<()>>) {
    if let Some(r) = rx {
        if r.recv().await.is_some() {
            return;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// The next value on `rx` (an estimate, bits per second, or a probe result); never
/// once the peer connection that publishes it is gone (then `rx` is `None`).
async fn next_value<T: Clone>(rx: &mut Option<watch::Receiver<T>>) -> T {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return r.borrow_and_update().clone();
        }
        *rx = None;
    }
    std::future::pending().await
}

/// The next frame of `pending`, or never.
async fn first_of(pending: Option<&(usize, Subscription)>) -> Option<Frame> {
    match pending {
        Some((_, sub)) => sub.recv().await,
        None => std::future::pending().await,
    }
}

/// The histograms a feed records into.
pub(super) struct Timing {
    /// Capture → RTP send, every frame.
    pub latency: Arc<LatencyHistogram>,
    /// Offer → first frame sent (video only): when the offer came, and where to record.
    pub first_frame: Option<(Instant, Arc<LatencyHistogram>)>,
}

/// Where a feed's frames come from.
pub(super) enum Source {
    /// One hub (audio).
    Plain(Subscription),
    /// A video ladder that follows the viewer (see [`Adapt`]).
    Adaptive(Adapt),
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn feed(
    kind: MediaKind,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    source: Source,
    mut live: watch::Receiver<bool>,
    stats: Arc<SessionStats>,
    timing: Timing,
    cancel: CancellationToken,
) {
    let Timing {
        latency,
        first_frame,
    } = timing;
    tokio::select! {
        r = live.wait_for(|l| *l) => if r.is_err() { return; },
        () = cancel.cancelled() => return,
    }
    let params = match sender.get_parameters().await {
        Ok(p) => p,
        Err(e) => {
            log::warn!("no negotiated parameters for {kind:?}: {e}");
            return;
        }
    };
    let Some(codec) = params.rtp_parameters.codecs.first() else {
        log::warn!("no negotiated codec for {kind:?}");
        return;
    };
    let payload_type = codec.payload_type;
    let clock_rate = codec.rtp_codec.clock_rate;
    // Every viewer of a hub packetizes its frames alike, except VP8, whose payloader
    // numbers the pictures it was given (RFC 7741 §4.2 PictureID).
    let shared_payloads = !codec
        .rtp_codec
        .mime_type
        .eq_ignore_ascii_case(rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8);
    let mut payloader = match codec.rtp_codec.payloader() {
        Ok(p) => p,
        Err(e) => {
            log::warn!("no payloader for {}: {e}", codec.rtp_codec.mime_type);
            return;
        }
    };
    let (plain, mut adaptive, mut rungs) = match source {
        Source::Plain(sub) => (Some(sub), None, None),
        Source::Adaptive(Adapt {
            first,
            ladder: full,
            mut withheld,
            estimate,
            keyframe_requests,
            control_keyframes,
            probes,
        }) => {
            // Bound by now: the viewer can be probed if it negotiated RTX and TWCC.
            let can_probe = probes.can_probe();
            let withheld_now = withheld.as_mut().map_or(0, |w| *w.borrow_and_update());
            let offered = offered(full.len(), withheld_now);
            let chooser = chooser(&full[..offered], can_probe);
            let rungs = Rungs {
                full,
                offered,
                can_probe,
                current: (0, first),
                pending: None,
                chooser,
                below: false,
                budget: FrameBudget::new(),
                estimate_bps: None,
                pacer: Pacer::new(*estimate.borrow()),
            };
            let results = probes.results();
            (
                None,
                Some((
                    Some(estimate),
                    Some(keyframe_requests),
                    Some(control_keyframes),
                    Some(results),
                    probes,
                    withheld,
                )),
                Some(rungs),
            )
        }
    };
    let mut probe_check = tokio::time::interval(PROBE_CHECK);
    probe_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut probe_id = 0u32;
    if let Some(r) = &rungs {
        // Start this viewer at a fresh IDR with SPS/PPS, now that it can receive.
        r.current.1.resync();
        *stats.rung.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.describe(0));
    }
    if let Some(sub) = &plain {
        while sub.try_recv().is_some() {}
    }
    let mut clock = RtpClock::new(clock_rate, rand::random(), rand::random());
    let mut last_drop_log = Instant::now();
    let mut last_timestamp: Option<u32> = None;
    loop {
        let frame = if let Some(sub) = &plain {
            tokio::select! {
                f = sub.recv() => match f { Some(f) => f, None => break },
                () = cancel.cancelled() => break,
            }
        } else if let (Some(r), Some(a)) = (rungs.as_mut(), adaptive.as_mut()) {
            tokio::select! {
                f = r.current.1.recv() => match f { Some(f) => f, None => break },
                f = first_of(r.pending.as_ref()) => {
                    let Some(f) = f else { break };
                    // The target rung's first frame is its IDR: switch here, on the
                    // same SSRC, sequence numbers and timestamp clock.
                    if let Some(next) = r.pending.take() {
                        let from = r.rung_name(r.current.0);
                        r.current = next;
                        let to = r.describe(r.level());
                        stats.rung_switches.fetch_add(1, Ordering::Relaxed);
                        log::info!(
                            "switched from the {from} rung to the {to} rung (estimate {} kbit/s)",
                            stats.estimate_kbps.load(Ordering::Relaxed)
                        );
                        *stats.rung.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
                    }
                    f
                }
                bps = next_value(&mut a.0) => {
                    // Realistic estimates are far below u64::MAX bits per second.
                    stats.estimate_kbps.store((bps / 1000.0) as u64, Ordering::Relaxed);
                    r.estimate_bps = Some(bps);
                    r.pacer.set_estimate(bps);
                    r.update_budget(Instant::now());
                    if let Some(to) = r.chooser.on_estimate(Instant::now(), bps) {
                        log::debug!(
                            "estimate {} kbit/s: to the {} rung",
                            (bps / 1000.0) as u64,
                            r.describe(to)
                        );
                        r.begin_switch(to, Instant::now());
                    }
                    continue;
                }
                _ = probe_check.tick() => {
                    if let Some(rate_bps) = r.chooser.probe_due(Instant::now()) {
                        probe_id = probe_id.wrapping_add(1);
                        log::debug!(
                            "probing {} kbit/s for the {} rung",
                            (rate_bps / 1000.0) as u64,
                            r.describe(r.level().saturating_sub(1))
                        );
                        a.4.request(ProbeRequest { id: probe_id, rate_bps });
                    }
                    continue;
                }
                withheld = next_value(&mut a.5) => {
                    r.set_withheld(withheld, Instant::now());
                    continue;
                }
                result = next_value(&mut a.3) => {
                    let Some(result) = result else { continue };
                    stats.probes.fetch_add(1, Ordering::Relaxed);
                    log::debug!(
                        "probe {} measured {} kbit/s",
                        result.id,
                        (result.bps / 1000.0) as u64
                    );
                    if let Some(to) = r.chooser.on_probe(Instant::now(), result.bps) {
                        r.begin_switch(to, Instant::now());
                    }
                    continue;
                }
                () = next_request(&mut a.1) => {
                    stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    log::debug!("PLI/FIR from viewer: requesting a keyframe");
                    r.current.1.request_keyframe();
                    continue;
                }
                () = next_request(&mut a.2) => {
                    r.current.1.request_keyframe();
                    continue;
                }
                () = cancel.cancelled() => break,
            }
        } else {
            break;
        };
        if let Some(r) = rungs.as_mut() {
            let was = r.budget.keyframes_only();
            let verdict = r
                .budget
                .offer(Instant::now(), frame.data.len(), frame.keyframe);
            if r.budget.keyframes_only() != was {
                log::info!(
                    "{} the {} rung (estimate {} kbit/s)",
                    if was {
                        "every frame again on"
                    } else {
                        "keyframes only on"
                    },
                    // The rung the viewer is on, or is headed for: held below the
                    // ladder straight from a higher rung, the budget already thins the
                    // old rung's frames while the lowest rung's first IDR is awaited.
                    r.describe(r.pending.as_ref().map_or(r.current.0, |p| p.0)),
                    stats.estimate_kbps.load(Ordering::Relaxed)
                );
                *stats.rung.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(r.describe(if r.budget.keyframes_only() {
                        r.offered
                    } else {
                        r.current.0
                    }));
            }
            if let Verdict::Drop { request_keyframe } = verdict {
                stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
                if request_keyframe {
                    r.current.1.request_keyframe();
                }
                continue;
            }
        }
        // Never backwards: after a switch the new rung's first frames can be older than
        // the last one sent from the old rung (a larger picture encodes later), and a
        // browser drops a frame older than one it has shown, then waits for a keyframe.
        // Such frames are stamped one tick after the last, as an SFU does when it
        // switches simulcast layers; the clock's own stamps resume as soon as they lead.
        let stamped = clock.timestamp(frame.pts);
        let timestamp = match last_timestamp {
            Some(last) if (stamped.wrapping_sub(last) as i32) <= 0 => last.wrapping_add(1),
            _ => stamped,
        };
        last_timestamp = Some(timestamp);
        let mut packetize = |data: &Bytes| match payloader.payload(RTP_MTU - 12, data) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot packetize {kind:?} frame: {e}");
                Vec::new()
            }
        };
        let payloads: Arc<[Bytes]> = if shared_payloads {
            frame.payloads_with(packetize)
        } else {
            packetize(&frame.data).into()
        };
        if payloads.is_empty() {
            continue;
        }
        let last = payloads.len() - 1;
        let mut bytes = 0u64;
        for (i, payload) in payloads.iter().cloned().enumerate() {
            bytes += payload.len() as u64;
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    marker: i == last && kind == MediaKind::Video,
                    payload_type,
                    sequence_number: clock.next_sequence(),
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload,
            };
            if let Some(r) = rungs.as_mut() {
                let wait = r.pacer.wait(Instant::now(), 12 + packet.payload.len());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            if let Err(e) = track.write_rtp(packet).await {
                log::debug!("write_rtp: {e}");
                return;
            }
        }
        latency.record(frame.captured_at.elapsed());
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        let sent_before = match kind {
            MediaKind::Video => stats.video_frames.fetch_add(1, Ordering::Relaxed),
            MediaKind::Audio => stats.audio_packets.fetch_add(1, Ordering::Relaxed),
        };
        if sent_before == 0
            && let Some((offered_at, histogram)) = &first_frame
        {
            histogram.record(offered_at.elapsed());
            log::debug!(
                "set-up: first {kind:?} frame sent {} ms after the offer, captured {} ms before",
                offered_at.elapsed().as_millis(),
                frame.captured_at.elapsed().as_millis()
            );
        }
        if last_drop_log.elapsed() >= Duration::from_secs(5) {
            let dropped = match (&plain, &rungs) {
                (Some(sub), _) => sub.take_dropped(),
                (None, Some(r)) => r.current.1.take_dropped(),
                _ => 0,
            };
            if dropped > 0 {
                stats.dropped_frames.fetch_add(dropped, Ordering::Relaxed);
                log::warn!("slow viewer: dropped {dropped} {kind:?} frames in the last 5 s");
            }
            last_drop_log = Instant::now();
        }
    }
}
