//! Receives a talking viewer's audio track (Opus, the m-line answered `sendrecv`) and
//! hands its RTP packets to talk-back ([`crate::talk`]), which decides whether they
//! are played.

use crate::signaling::protocol::SessionId;
use crate::talk::Talkback;
use rtc::shared::marshal::Marshal;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// Reads `track` until it ends or `cancel`, then gives up the floor for `session`.
pub(super) async fn receive(
    track: Arc<dyn TrackRemote>,
    session: SessionId,
    talk: Talkback,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            ev = track.poll() => ev,
        };
        match event {
            None | Some(TrackRemoteEvent::OnEnded) => break,
            Some(TrackRemoteEvent::OnRtpPacket(pkt)) => {
                // Marshalling cannot fail for a packet that was just parsed; one that
                // does is dropped like a lost one.
                if let Ok(rtp) = pkt.marshal() {
                    talk.packet(&session, pkt.header.payload_type, rtp.to_vec());
                }
            }
            Some(_) => {}
        }
    }
    talk.release(&session).await;
}
