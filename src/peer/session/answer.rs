//! Which of the camera's candidates the SDP answer carries.
//!
//! A viewer that trickles (MQTT) gets the answer once the host candidates are in it and
//! every candidate trickled as well; one that cannot (WHEP) gets it once gathering is
//! complete. Either way the candidate lines pass through NAT 1:1 like the trickled ones.

use super::SessionCtx;
use super::build::{Internal, transport_policy};
use super::diag::Gathered;
use crate::peer::nat::{map_candidate_lines, nat_1to1_candidates};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc::peer_connection::{PeerConnection, RTCIceTransportPolicy};

/// How long a non-trickle front-end's answer waits for ICE gathering to complete (TURN
/// allocations usually take tens of ms; a TURN server that does not answer is not
/// waited for beyond this).
const GATHERING_WAIT: Duration = Duration::from_secs(5);

/// How long a trickled answer waits for the host candidates. webrtc-rs adds them all
/// within the same turn of its driver, 1–2 ms after the local description is set
/// (docs/performance.md); this bound only matters when a host has none to gather.
const HOST_WAIT: Duration = Duration::from_millis(10);

/// For a front-end that trickles (MQTT): returns the answer with the host candidates
/// gathered so far, as `localDescription` carries them (W3C WebRTC 1.0,
/// `localDescription`), so that a viewer can start its connectivity checks without
/// waiting for the first trickled candidate. Every candidate is still trickled (Trickle
/// ICE, RFC 8838, lets candidates go in the description and trickle after it; a viewer
/// ignores one it already has): the events consumed here go to `replay`, in order, for
/// the session's loop. Waits for the first local candidate (webrtc-rs adds the whole host
/// batch to the agent before it reports any of it) or the end of gathering, at most
/// [`HOST_WAIT`]. It does not wait when the description already has candidates (a
/// renegotiation without ICE restart keeps the gathered ones) or when the camera is
/// relay-only (no host candidates). `None` when there is no local description.
pub(super) async fn with_host_candidates(
    ctx: &SessionCtx,
    pc: &Arc<dyn PeerConnection>,
    internal: &mut mpsc::UnboundedReceiver<Internal>,
    replay: &mut VecDeque<Internal>,
) -> Option<String> {
    let sdp = pc.local_description().await?.sdp;
    if sdp.contains("\na=candidate:") || transport_policy(ctx) == RTCIceTransportPolicy::Relay {
        return Some(advertised_sdp(ctx, &sdp));
    }
    let wait = async {
        while let Some(ev) = internal.recv().await {
            let done = matches!(ev, Internal::Candidate(_) | Internal::GatheringComplete);
            replay.push_back(ev);
            if done {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(HOST_WAIT, wait).await;
    pc.local_description()
        .await
        .map(|d| advertised_sdp(ctx, &d.sdp))
}

/// For a front-end that cannot trickle (WHEP): waits until ICE gathering completes (at
/// most [`GATHERING_WAIT`]) and returns the local description, whose SDP then carries
/// every candidate (W3C WebRTC 1.0: `localDescription` includes the gathered ones).
/// Candidates are counted into `gathered`; other events that arrive meanwhile are kept
/// in `replay` for the session's loop. `None` when there is no local description.
pub(super) async fn complete(
    ctx: &SessionCtx,
    pc: &Arc<dyn PeerConnection>,
    internal: &mut mpsc::UnboundedReceiver<Internal>,
    gathered: &mut Gathered,
    replay: &mut VecDeque<Internal>,
) -> Option<String> {
    let wait = async {
        while let Some(ev) = internal.recv().await {
            match ev {
                Internal::Candidate(init) => gathered.count(&init.candidate),
                Internal::GatheringComplete => {
                    replay.push_back(Internal::GatheringComplete);
                    return;
                }
                other => replay.push_back(other),
            }
        }
    };
    if tokio::time::timeout(GATHERING_WAIT, wait).await.is_err() {
        log::warn!(
            session_id = ctx.id.as_str();
            "ICE gathering incomplete after {} ms: answering with the candidates so far",
            GATHERING_WAIT.as_millis()
        );
    }
    pc.local_description()
        .await
        .map(|d| advertised_sdp(ctx, &d.sdp))
}

/// The lines the camera advertises for one of its candidate lines, in the trickle and
/// in the answer alike: the line as gathered, or moved to (or twinned with) the
/// configured public address (`peer::nat`, NAT 1:1).
pub(super) fn advertised(ctx: &SessionCtx, line: &str) -> Vec<String> {
    match &ctx.settings.nat_1to1_ip {
        Some(public) => nat_1to1_candidates(line, public, ctx.settings.nat_1to1_srflx),
        None => vec![line.to_owned()],
    }
}

/// An answer's SDP with each candidate line replaced by what [`advertised`] gives.
fn advertised_sdp(ctx: &SessionCtx, sdp: &str) -> String {
    map_candidate_lines(sdp, |line| advertised(ctx, line))
}
