//! WebRTC side: one `RTCPeerConnection` per viewer. Only this module imports `webrtc`
//! (pinned to 0.21.x) and `rtc`.
//!
//! - [`Peers`]: the session registry; turns [`PeerCommand`]s into per-session tasks and
//!   reports [`PeerReport`]s back.
//! - `session`: one viewer (peer connection, tracks fed from hub subscriptions, RTCP).
//! - [`sdp`]: offer validation. [`ice`]: ICE servers and TURN credentials.
//! - [`stats`]: counters and the capture→RTP-send latency histogram.

mod feedback;
pub mod ice;
pub mod sdp;
mod session;
pub mod stats;

use crate::media::VideoFormat;
use crate::media::hub::Hub;
use crate::signaling::machine::{PeerCommand, PeerEvent};
use crate::signaling::protocol::SessionId;
use session::{SessionCmd, SessionCtx};
use stats::{LatencyHistogram, SessionSnapshot, SessionStats};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings shared by all sessions.
#[derive(Debug, Clone, Default)]
pub struct PeerSettings {
    /// ICE servers and policy.
    pub ice: ice::IcePolicy,
    /// Addresses to gather UDP host candidates on; empty = all interfaces.
    pub udp_bind: Vec<IpAddr>,
}

/// The media a session feeds from.
#[derive(Debug, Clone)]
pub struct MediaFeeds {
    /// H.264 hub.
    pub video: Hub,
    /// Opus hub, `None` without audio.
    pub audio: Option<Hub>,
    /// What the encoder emits, `None` until its first keyframe.
    pub format: watch::Receiver<Option<VideoFormat>>,
}

/// An event from one session, tagged with the session's generation so a late event
/// from a closed session cannot touch a new one with the same id.
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// Session.
    pub session: SessionId,
    /// Generation (see [`Peers::is_current`]).
    pub generation: u64,
    /// What happened.
    pub event: PeerEvent,
}

struct Handle {
    generation: u64,
    tx: mpsc::UnboundedSender<SessionCmd>,
    cancel: CancellationToken,
    stats: Arc<SessionStats>,
}

/// The session registry: one task per viewer.
pub struct Peers {
    settings: Arc<PeerSettings>,
    media: MediaFeeds,
    events: mpsc::UnboundedSender<PeerReport>,
    sessions: HashMap<SessionId, Handle>,
    next_generation: u64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    latency: Arc<LatencyHistogram>,
}

impl Peers {
    /// A registry whose session tasks are tracked by `tracker` and cancelled with
    /// `shutdown`; their reports go to `events`.
    pub fn new(
        settings: PeerSettings,
        media: MediaFeeds,
        events: mpsc::UnboundedSender<PeerReport>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            media,
            events,
            sessions: HashMap::new(),
            next_generation: 1,
            tracker,
            shutdown,
            latency: Arc::new(LatencyHistogram::default()),
        }
    }

    /// Whether a report of `generation` still concerns the live `session`.
    pub fn is_current(&self, session: &SessionId, generation: u64) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|h| h.generation == generation)
    }

    /// Carries out one command of the signaling machine.
    pub fn command(&mut self, cmd: PeerCommand) {
        match cmd {
            PeerCommand::Offer { session, sdp } => {
                if let Some(h) = self.sessions.get(&session) {
                    let _ = h.tx.send(SessionCmd::Offer(sdp));
                    return;
                }
                let generation = self.next_generation;
                self.next_generation += 1;
                let (tx, rx) = mpsc::unbounded_channel();
                let cancel = self.shutdown.child_token();
                let stats = Arc::new(SessionStats::default());
                let ctx = SessionCtx {
                    id: session.clone(),
                    generation,
                    settings: self.settings.clone(),
                    media: self.media.clone(),
                    events: self.events.clone(),
                    cancel: cancel.clone(),
                    stats: stats.clone(),
                    latency: self.latency.clone(),
                };
                self.tracker.spawn(session::run(ctx, sdp, rx));
                self.sessions.insert(
                    session,
                    Handle {
                        generation,
                        tx,
                        cancel,
                        stats,
                    },
                );
            }
            PeerCommand::AddCandidate { session, candidate } => {
                if let Some(h) = self.sessions.get(&session) {
                    let _ = h.tx.send(SessionCmd::Candidate(candidate));
                }
            }
            PeerCommand::Close { session } => {
                if let Some(h) = self.sessions.remove(&session) {
                    h.cancel.cancel();
                }
            }
        }
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Per-session counters.
    pub fn snapshots(&self) -> Vec<SessionSnapshot> {
        let mut v: Vec<_> = self
            .sessions
            .iter()
            .map(|(id, h)| h.stats.snapshot(id.as_str()))
            .collect();
        v.sort_by(|a, b| a.session.cmp(&b.session));
        v
    }

    /// The process-wide capture→RTP-send latency histogram.
    pub fn latency(&self) -> Arc<LatencyHistogram> {
        self.latency.clone()
    }
}
