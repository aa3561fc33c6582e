//! One viewer session: an `RTCPeerConnection` that answers the viewer's offer with
//! sendonly H.264 (+ Opus when offered), fed from the hubs.
//!
//! - `build`: peer connection, codecs, interceptors, ICE servers, port range, mDNS
//!   fallback; applying an offer.
//! - `feed`: hub subscription → RTP on the tracks; PLI/FIR → keyframe requests.
//! - [`rtp`]: RTP timestamps from the frame PTS (RFC 3550 §5.1: sampling instant, never
//!   a wall-clock ticker) and sequence numbers, pure.
//! - `answer`: which of the camera's candidates the SDP answer carries.
//! - `diag`: gathered candidates and the selected pair, for the log.
//! - this file: the session's event loop.

mod answer;
mod build;
mod control;
mod diag;
mod feed;
pub mod rtp;
mod talk;

use super::sdp::{SendCapability, VideoCodec, check_offer};
use super::stats::{LatencyHistogram, SessionStats};
use super::{MediaFeeds, PeerReport, PeerSettings};
use crate::media::MediaKind;
use crate::signaling::machine::PeerEvent;
use crate::signaling::protocol::{CandidateInit, ErrorCode, SessionId};
use crate::telemetry;
use build::{Built, Internal, Reject, answer, build, ice_servers, transport_policy};
pub(crate) use build::{codec_opus, local_track};
use diag::{Gathered, selected_pair};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::{
    PeerConnection, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceConnectionState,
    RTCIceTransportPolicy, RTCPeerConnectionState,
};

/// Longest wait for the encoder's first keyframe before refusing an offer.
const FORMAT_WAIT: Duration = Duration::from_secs(5);

/// Work for a running session, in arrival order.
#[derive(Debug)]
pub(crate) enum SessionCmd {
    /// A renegotiation offer.
    Offer(String),
    /// A remote candidate or end of candidates.
    Candidate(Option<CandidateInit>),
}

/// What one session task needs.
pub(crate) struct SessionCtx {
    pub id: SessionId,
    pub generation: u64,
    pub settings: Arc<PeerSettings>,
    pub media: MediaFeeds,
    pub events: mpsc::Sender<PeerReport>,
    pub cancel: CancellationToken,
    pub stats: Arc<SessionStats>,
    pub latency: Arc<LatencyHistogram>,
    /// Offer → first video frame sent, all sessions.
    pub first_frame: Arc<LatencyHistogram>,
    /// When the session's first offer reached the peer layer.
    pub offered_at: std::time::Instant,
    pub frontend: super::Frontend,
}

impl SessionCtx {
    /// Sends a report, waiting while the queue is full; a closed queue (the camera is
    /// shutting down) drops it.
    async fn report(&self, event: PeerEvent) {
        let report = PeerReport {
            session: self.id.clone(),
            generation: self.generation,
            event,
        };
        tokio::select! {
            _ = self.events.send(report) => {}
            () = self.cancel.cancelled() => {}
        }
    }
}

/// A failure of edgecam itself inside one session (not of the viewer's input or
/// network): the registry ends the session with `error` `internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A media task (RTP feed or keyframe forwarder) panicked.
    #[error("media task panicked: {0}")]
    MediaTask(String),
    /// The session task itself panicked.
    #[error("session task panicked: {0}")]
    Panicked(String),
}

/// Where a session puts its peer connection once built, so that the registry can close
/// it when the session task dies without doing so itself.
#[derive(Clone, Default)]
pub(crate) struct PcSlot(Arc<Mutex<Option<Arc<dyn PeerConnection>>>>);

impl PcSlot {
    /// Registers the session's peer connection.
    pub(crate) fn set(&self, pc: Arc<dyn PeerConnection>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(pc);
    }

    /// Takes the registered peer connection, if any.
    pub(crate) fn take(&self) -> Option<Arc<dyn PeerConnection>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes them).
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned())
}

/// Runs one session until it is cancelled or ends. What the viewer caused (a bad offer,
/// a failed connection) is reported as a [`PeerEvent`] and ends with `Ok`; `Err` is for
/// failures of edgecam itself, which the registry turns into `error` `internal`. The
/// peer connection is put in `slot` as soon as it exists, so that the registry can close
/// it should this task panic.
///
/// # Errors
/// [`SessionError`] when one of the session's media tasks ends abnormally.
pub(crate) async fn run(
    ctx: SessionCtx,
    first_offer: String,
    mut cmds: mpsc::Receiver<SessionCmd>,
    slot: PcSlot,
) -> Result<(), SessionError> {
    // The camera's share of the offer → answer time, in the debug log (docs/performance.md).
    let offered_at = std::time::Instant::now();
    let mut format_rx = ctx.media.format.clone();
    let format = tokio::select! {
        f = tokio::time::timeout(FORMAT_WAIT, format_rx.wait_for(Option::is_some)) => {
            f.ok().and_then(Result::ok).and_then(|f| f.clone())
        }
        () = ctx.cancel.cancelled() => return Ok(()),
    };
    let Some(format) = format else {
        ctx.report(PeerEvent::OfferRejected {
            code: ErrorCode::Internal,
            message: "camera has not produced video yet, retry shortly".into(),
        })
        .await;
        return Ok(());
    };
    let cap = SendCapability {
        profile_level_id: format.profile_level_id.clone(),
        vp8: ctx.media.vp8.is_some(),
    };
    let info = match check_offer(&first_offer, &cap) {
        Ok(info) => info,
        Err(e) => {
            ctx.report(PeerEvent::OfferRejected {
                code: ErrorCode::BadOffer,
                message: e.to_string(),
            })
            .await;
            return Ok(());
        }
    };
    // The viewer offers to send audio and the camera has a speaker. WHEP is egress only
    // (draft-ietf-wish-whep): a WHEP client's sendrecv audio is answered sendonly, so a
    // player that offers sendrecv by habit never takes the floor.
    let talk = info.talk && ctx.media.talk.is_some() && ctx.frontend == super::Frontend::Mqtt;
    let _ = ctx.stats.video_codec.set(info.video.name());
    let (ladder, withheld) = match (info.video, &ctx.media.vp8) {
        (VideoCodec::Vp8, Some(rung)) => {
            log::info!(session_id = ctx.id.as_str(); "the viewer offers no usable H.264: sending the VP8 rung");
            (vec![rung.clone()], None)
        }
        _ => (ctx.media.ladder.clone(), Some(ctx.media.withheld.clone())),
    };
    // The first rung's encoder (an extra rung's starts on demand) warms up while ICE
    // and DTLS run.
    let Some(first) = ladder.first().map(|r| r.hub.subscribe()) else {
        return Err(SessionError::MediaTask("no video rung".into()));
    };
    let initial_estimate = ladder.first().map_or(1e6, |r| {
        crate::peer::adapt::needed_kbps(r.bitrate_kbps) * 1000.0
    });
    let built = match build(
        &ctx,
        (info.video, &cap.profile_level_id),
        (info.audio, talk),
        initial_estimate,
    )
    .await
    {
        Ok(b) => b,
        Err(Reject(code, message)) => {
            ctx.report(PeerEvent::OfferRejected { code, message }).await;
            return Ok(());
        }
    };
    let Built {
        pc,
        receive,
        mut internal,
        keyframe_requests,
        estimate,
        probes,
        video,
        audio,
    } = built;
    slot.set(pc.clone());
    let built_in = offered_at.elapsed();
    let mut gathered = Gathered::default();
    // Events that came while an answer waited for candidates, for the main loop.
    let mut replay = std::collections::VecDeque::new();
    let answered = answer(&pc, first_offer, receive).await;
    log::debug!(
        session_id = ctx.id.as_str();
        "set-up: peer connection built {} ms, answer ready {} ms after the offer",
        built_in.as_millis(),
        offered_at.elapsed().as_millis()
    );
    match answered {
        Ok(sdp) if ctx.frontend.trickles() => {
            let sdp = answer::with_host_candidates(&ctx, &pc, &mut internal, &mut replay)
                .await
                .unwrap_or(sdp);
            ctx.report(PeerEvent::Answer(sdp)).await;
        }
        Ok(sdp) => {
            let sdp = answer::complete(&ctx, &pc, &mut internal, &mut gathered, &mut replay)
                .await
                .unwrap_or(sdp);
            ctx.report(PeerEvent::Answer(sdp)).await;
        }
        Err(Reject(code, message)) => {
            ctx.report(PeerEvent::OfferRejected { code, message }).await;
            let _ = pc.close().await;
            return Ok(());
        }
    }

    let media_cancel = ctx.cancel.child_token();
    let (live_tx, live_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let (control_keyframes, control_keyframes_rx) = mpsc::channel(1);
    tasks.spawn(feed::feed(
        MediaKind::Video,
        video.0.clone(),
        video.1.clone(),
        video.2,
        feed::Source::Adaptive(feed::Adapt {
            first,
            ladder,
            withheld,
            estimate,
            keyframe_requests,
            control_keyframes: control_keyframes_rx,
            probes,
        }),
        live_rx.clone(),
        ctx.stats.clone(),
        feed::Timing {
            latency: ctx.latency.clone(),
            first_frame: Some((ctx.offered_at, ctx.first_frame.clone())),
        },
        media_cancel.clone(),
    ));
    if let (Some((track, sender, ssrc)), Some(hub)) = (audio, ctx.media.audio.as_ref()) {
        tasks.spawn(feed::feed(
            MediaKind::Audio,
            track.clone(),
            sender,
            ssrc,
            feed::Source::Plain(hub.subscribe()),
            live_rx.clone(),
            ctx.stats.clone(),
            feed::Timing {
                latency: ctx.latency.clone(),
                first_frame: None,
            },
            media_cancel.clone(),
        ));
    }

    let mut ice_state = RTCIceConnectionState::New;
    let mut control_open = false;
    let mut talk_open = false;
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => break,
            Some(done) = tasks.join_next() => {
                // A media task that returns has nothing left to send (hub closed, track
                // gone); one that panicked leaves this viewer without media.
                if let Err(e) = done && e.is_panic() {
                    outcome = Err(SessionError::MediaTask(panic_text(e.into_panic().as_ref())));
                    break;
                }
            },
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(SessionCmd::Candidate(Some(c))) => {
                    let init = RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_mline_index,
                        username_fragment: c.username_fragment,
                        ..Default::default()
                    };
                    if let Err(e) = pc.add_ice_candidate(init).await {
                        // Contract: unusable candidate lines are skipped with a log line.
                        log::info!(session_id = ctx.id.as_str(); "skipping remote candidate: {e}");
                    }
                }
                Some(SessionCmd::Candidate(None)) => {
                    // End of candidates is only a hint: peer-reflexive candidates and
                    // connectivity checks may still arrive, so ICE is never failed here.
                    log::debug!(session_id = ctx.id.as_str(); "viewer signalled end of candidates");
                }
                Some(SessionCmd::Offer(sdp)) => {
                    if let Err(e) = check_offer(&sdp, &cap) {
                        ctx.report(PeerEvent::OfferRejected { code: ErrorCode::BadOffer, message: e.to_string() }).await;
                        break;
                    }
                    if ctx.settings.ice.camera_mints() {
                        // A renegotiation is usually an ICE restart (network change, or
                        // the viewer's credentials refresh): the camera's own TURN REST
                        // credentials are renewed with it so its allocations outlive them.
                        // Same defaults as at build, so only servers and policy change.
                        let config = RTCConfigurationBuilder::new()
                            .with_ice_servers(ice_servers(&ctx))
                            .with_ice_transport_policy(transport_policy(&ctx))
                            .build();
                        if let Err(e) = pc.set_configuration(config).await {
                            log::warn!(session_id = ctx.id.as_str(); "cannot renew TURN credentials: {e}");
                        }
                    }
                    gathered = Gathered::default();
                    match answer(&pc, sdp, receive).await {
                        Ok(sdp) => {
                            // An ICE restart gathers anew; its host candidates go in the
                            // answer as on the first offer.
                            let sdp = answer::with_host_candidates(&ctx, &pc, &mut internal, &mut replay)
                                .await
                                .unwrap_or(sdp);
                            ctx.report(PeerEvent::Answer(sdp)).await;
                            if matches!(ice_state, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed) {
                                // No ICE restart: the session is still connected.
                                ctx.report(PeerEvent::Connected).await;
                            }
                        }
                        Err(Reject(code, message)) => {
                            ctx.report(PeerEvent::OfferRejected { code, message }).await;
                            break;
                        }
                    }
                }
            },
            ev = next_internal(&mut replay, &mut internal) => match ev {
                None => break,
                Some(Internal::Candidate(init)) => {
                    gathered.count(&init.candidate);
                    if !ctx.frontend.trickles() {
                        continue;
                    }
                    for candidate in answer::advertised(&ctx, &init.candidate) {
                        ctx.report(PeerEvent::LocalCandidate(Some(CandidateInit {
                            candidate,
                            sdp_mid: init.sdp_mid.clone().filter(|m| !m.is_empty()).or_else(|| Some("0".into())),
                            sdp_mline_index: init.sdp_mline_index,
                            username_fragment: init.username_fragment.clone(),
                        }))).await;
                    }
                }
                Some(Internal::DataChannel(dc)) => {
                    let label = dc.label().await.unwrap_or_default();
                    if label == crate::peer::control::LABEL && !control_open {
                        control_open = true;
                        tasks.spawn(control::serve(dc, control::ControlCtx {
                            id: ctx.id.clone(),
                            stats: ctx.stats.clone(),
                            keyframe: control_keyframes.clone(),
                            snapshots: ctx.media.snapshots.clone(),
                            talk: ctx.media.talk.clone().filter(|_| receive.talk),
                        }, media_cancel.clone()));
                    } else {
                        // Only one control channel per session, and nothing else: a
                        // viewer cannot make the camera hold channels it does not serve.
                        log::info!(session_id = ctx.id.as_str(); "closing data channel {:?}: only one \"control\" channel is served", label.chars().take(64).collect::<String>());
                        let _ = dc.close().await;
                    }
                }
                Some(Internal::Track(track)) => {
                    let kind = track.kind().await;
                    match ctx.media.talk.clone() {
                        Some(talkback) if receive.talk && !talk_open && kind == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio => {
                            talk_open = true;
                            log::debug!(session_id = ctx.id.as_str(); "receiving the viewer's audio for talk-back");
                            tasks.spawn(talk::receive(track, ctx.id.clone(), talkback, media_cancel.clone()));
                        }
                        // Answered sendonly/inactive, so nothing should come; what does
                        // is left to webrtc-rs's bounded queue and dropped.
                        _ => log::debug!(session_id = ctx.id.as_str(); "ignoring a {kind} track from the viewer"),
                    }
                }
                Some(Internal::GatheringComplete) => {
                    if ctx.frontend.trickles() {
                        ctx.report(PeerEvent::LocalCandidate(None)).await;
                    }
                    log::info!(session_id = ctx.id.as_str(); "ICE gathering complete: {gathered}, {} ms after the offer", offered_at.elapsed().as_millis());
                    if ctx.settings.ice.camera_has_turn() && gathered.relay == 0 {
                        log::warn!(session_id = ctx.id.as_str(); "no relay candidate from the TURN server(s): allocation refused or unreachable (wrong/expired credentials or secret, or TURN port blocked); see the webrtc log line above");
                        if transport_policy(&ctx) == RTCIceTransportPolicy::Relay {
                            ctx.report(PeerEvent::Failed("relay-only camera got no TURN allocation".into())).await;
                            break;
                        }
                    }
                }
                Some(Internal::Ice(state)) => {
                    log::debug!(session_id = ctx.id.as_str(); "ICE connection state {state}, {} ms after the offer", offered_at.elapsed().as_millis());
                    ice_state = state;
                    if matches!(state, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed) {
                        ctx.report(PeerEvent::Connected).await;
                        // After an ICE restart the path may have changed.
                        if let Some((pair, remote)) = selected_pair(&pc).await {
                            let mut current = ctx.stats.candidate_pair.lock().unwrap_or_else(|p| p.into_inner());
                            if current.as_deref() != Some(pair.as_str()) {
                                let peer_addr = remote.map_or_else(|| "?".to_owned(), |(ip, port)| {
                                    telemetry::peer_addr(ip, port, ctx.settings.redact_peer_addr)
                                });
                                log::info!(session_id = ctx.id.as_str(), peer_addr = peer_addr.as_str(); "media flowing over {pair}");
                                *current = Some(pair);
                            }
                        }
                    }
                }
                Some(Internal::State(state)) => {
                    log::info!(session_id = ctx.id.as_str(); "peer connection {state}, {} ms after the offer", offered_at.elapsed().as_millis());
                    match state {
                        RTCPeerConnectionState::Connected => {
                            live_tx.send_replace(true);
                        }
                        RTCPeerConnectionState::Failed => {
                            ctx.report(PeerEvent::Failed("ICE/DTLS failed".into())).await;
                            break;
                        }
                        RTCPeerConnectionState::Closed => {
                            ctx.report(PeerEvent::Failed("peer connection closed".into())).await;
                            break;
                        }
                        _ => {}
                    }
                }
            },
        }
    }
    media_cancel.cancel();
    while tasks.join_next().await.is_some() {}
    if let Some(talkback) = ctx.media.talk.as_ref().filter(|_| receive.talk) {
        // A `talk` claim without audio (or audio that ended early) holds the floor too.
        talkback.release(&ctx.id).await;
    }
    if let Err(e) = pc.close().await {
        log::debug!(session_id = ctx.id.as_str(); "close: {e}");
    }
    let resends = (ctx.stats.resends.summary())
        .map(|r| format!("; resends: {r}"))
        .unwrap_or_default();
    log::info!(session_id = ctx.id.as_str(); "session {} closed{resends}", ctx.id);
    outcome
}

/// The next event: first those kept while an answer waited for candidates
/// (`answer`).
async fn next_internal(
    replay: &mut std::collections::VecDeque<Internal>,
    internal: &mut mpsc::UnboundedReceiver<Internal>,
) -> Option<Internal> {
    match replay.pop_front() {
        Some(ev) => Some(ev),
        None => internal.recv().await,
    }
}
