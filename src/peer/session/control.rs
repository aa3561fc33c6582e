//! Serves one viewer's `control` data channel (protocol: [`crate::peer::control`]):
//! reads its messages, carries out the commands and writes the replies.

use crate::media::snapshot::{self, Snapshots};
use crate::peer::control::{self, Action, Command, Control, ControlError};
use crate::peer::stats::SessionStats;
use crate::signaling::protocol::SessionId;
use crate::talk::Talkback;
use crate::talk::floor::Claim;
use crate::telemetry::{RateLimit, suppressed};
use bytes::BytesMut;
use serde_json::{Map, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// What the commands act on.
pub(super) struct ControlCtx {
    pub id: SessionId,
    pub stats: Arc<SessionStats>,
    /// Asks the video feed for a keyframe of the rung it sends (capacity 1: requests
    /// while one is pending coalesce).
    pub keyframe: tokio::sync::mpsc::Sender<()>,
    pub snapshots: Snapshots,
    /// Talk-back, when this viewer may talk (its audio m-line was answered sendrecv).
    pub talk: Option<Talkback>,
}

/// Serves `dc` until it closes or `cancel`.
pub(super) async fn serve(dc: Arc<dyn DataChannel>, ctx: ControlCtx, cancel: CancellationToken) {
    let mut control = Control::default();
    let mut refusals = RateLimit::new(Duration::from_secs(10));
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            ev = dc.poll() => ev,
        };
        let msg = match event {
            None | Some(DataChannelEvent::OnClose) => break,
            Some(DataChannelEvent::OnMessage(msg)) => msg,
            Some(_) => continue,
        };
        let action = control.handle(Instant::now(), &msg.data, msg.is_string);
        let sent = match action {
            Action::Ignore => Ok(()),
            Action::Reply(refusal) => {
                if let Some(held_back) = refusals.check(Instant::now()) {
                    log::info!(session_id = ctx.id.as_str(); "control channel: refused {refusal}{}", suppressed(held_back));
                }
                dc.send_text(&refusal).await
            }
            Action::Run { id, cmd } => run(&*dc, &ctx, id.as_ref(), cmd).await,
        };
        if let Err(e) = sent {
            log::debug!(session_id = ctx.id.as_str(); "control channel: send failed: {e}");
            break;
        }
    }
    let _ = dc.close().await;
}

async fn run(
    dc: &dyn DataChannel,
    ctx: &ControlCtx,
    id: Option<&control::RequestId>,
    cmd: Command,
) -> webrtc::error::Result<()> {
    match cmd {
        Command::Stats => {
            let snap = ctx.stats.snapshot(ctx.id.as_str());
            let mut fields = Map::new();
            fields.insert(
                "stats".into(),
                json!({
                    "videoFrames": snap.video_frames,
                    "audioPackets": snap.audio_packets,
                    "bytes": snap.bytes,
                    "keyframeRequests": snap.keyframe_requests,
                    "droppedFrames": snap.dropped_frames,
                    "candidatePair": snap.candidate_pair,
                    "videoCodec": snap.video_codec,
                    "estimateKbps": snap.estimate_kbps,
                    "rung": snap.rung,
                    "rungSwitches": snap.rung_switches,
                    "probes": snap.probes,
                    "nackedPackets": snap.nacked_packets,
                    "resentPackets": snap.resent_packets,
                }),
            );
            dc.send_text(&control::ok(id, cmd, fields)).await
        }
        Command::Keyframe => {
            let _ = ctx.keyframe.try_send(());
            dc.send_text(&control::ok(id, cmd, Map::new())).await
        }
        Command::Talk | Command::TalkEnd => {
            let Some(talk) = &ctx.talk else {
                let reply = control::refusal(
                    id,
                    Some(cmd.name()),
                    ControlError::Unsupported,
                    "no talk-back: the camera has no [audio] playback_device, or this session's audio is not sendrecv",
                );
                return dc.send_text(&reply).await;
            };
            if cmd == Command::TalkEnd {
                talk.release(&ctx.id).await;
                return dc.send_text(&control::ok(id, cmd, Map::new())).await;
            }
            match talk.claim(&ctx.id).await {
                Claim::Granted => dc.send_text(&control::ok(id, cmd, Map::new())).await,
                Claim::Busy => {
                    let reply = control::refusal(
                        id,
                        Some(cmd.name()),
                        ControlError::Busy,
                        "another viewer is talking",
                    );
                    dc.send_text(&reply).await
                }
            }
        }
        Command::Snapshot => {
            let jpeg = ctx.snapshots.take(snapshot::FRESH, snapshot::TIMEOUT).await;
            match jpeg {
                Ok(jpeg) => {
                    let fields = control::snapshot_fields(jpeg.data.len());
                    dc.send_text(&control::ok(id, cmd, fields)).await?;
                    for chunk in jpeg.data.chunks(control::CHUNK_BYTES) {
                        dc.send(BytesMut::from(chunk)).await?;
                    }
                    Ok(())
                }
                Err(e) => {
                    let reply = control::refusal(
                        id,
                        Some(cmd.name()),
                        ControlError::Unavailable,
                        &e.to_string(),
                    );
                    dc.send_text(&reply).await
                }
            }
        }
    }
}
