//! The media tasks of one session: hub subscription → RTP packets on the session's
//! tracks, and the viewer's PLI/FIR → coalesced keyframe requests.

use super::rtp::RtpClock;
use crate::media::MediaKind;
use crate::media::hub::Subscription;
use crate::peer::stats::{LatencyHistogram, SessionStats};
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

/// The histograms a feed records into.
pub(super) struct Timing {
    /// Capture → RTP send, every frame.
    pub latency: Arc<LatencyHistogram>,
    /// Offer → first frame sent (video only): when the offer came, and where to record.
    pub first_frame: Option<(Instant, Arc<LatencyHistogram>)>,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn feed(
    kind: MediaKind,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    sub: Arc<Subscription>,
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
    let mut payloader = match codec.rtp_codec.payloader() {
        Ok(p) => p,
        Err(e) => {
            log::warn!("no payloader for {}: {e}", codec.rtp_codec.mime_type);
            return;
        }
    };
    if kind == MediaKind::Video {
        // Start this viewer at a fresh IDR with SPS/PPS, now that it can receive.
        sub.resync();
    } else {
        while sub.try_recv().is_some() {}
    }
    let mut clock = RtpClock::new(clock_rate, rand::random(), rand::random());
    let mut last_drop_log = Instant::now();
    loop {
        let frame = tokio::select! {
            f = sub.recv() => match f { Some(f) => f, None => break },
            () = cancel.cancelled() => break,
        };
        let timestamp = clock.timestamp(frame.pts);
        let payloads = match payloader.payload(RTP_MTU - 12, &frame.data) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot packetize {kind:?} frame: {e}");
                continue;
            }
        };
        let last = payloads.len().saturating_sub(1);
        let mut bytes = 0u64;
        for (i, payload) in payloads.into_iter().enumerate() {
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
        }
        if last_drop_log.elapsed() >= Duration::from_secs(5) {
            let dropped = sub.take_dropped();
            if dropped > 0 {
                stats.dropped_frames.fetch_add(dropped, Ordering::Relaxed);
                log::warn!("slow viewer: dropped {dropped} {kind:?} frames in the last 5 s");
            }
            last_drop_log = Instant::now();
        }
    }
}

/// Turns PLI/FIR from the viewer (reported by `peer::feedback::KeyframeFeedback`) into keyframe
/// requests, which the hub coalesces with every other viewer's.
pub(super) async fn forward_keyframe_requests(
    mut requests: mpsc::Receiver<()>,
    sub: Arc<Subscription>,
    stats: Arc<SessionStats>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            r = requests.recv() => match r {
                Some(()) => {
                    stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    log::debug!("PLI/FIR from viewer: requesting a keyframe");
                    sub.request_keyframe();
                }
                None => return,
            },
            () = cancel.cancelled() => return,
        }
    }
}
