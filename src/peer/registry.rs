//! The session registry: one supervised task per viewer session.
//!
//! Every session task runs inside [`supervise`], a `catch_unwind` boundary: a session
//! that panics or returns an error (a fault of edgecam, not of the viewer) has its peer
//! connection closed and is reported as [`PeerEvent::Aborted`], which the signaling
//! machine turns into `error` `internal` and a freed slot at once. One session's fault
//! never reaches another session or the registry.

use super::session::{self, PcSlot, SessionCmd, SessionCtx, SessionError, panic_text};
use super::stats::{LatencyHistogram, SessionSnapshot, SessionStats, SessionTotals};
use super::{Frontend, MediaFeeds, PeerReport, PeerSettings};
use crate::signaling::machine::{PeerCommand, PeerEvent};
use crate::signaling::protocol::SessionId;
use futures::FutureExt as _;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Commands queued to one session task (renegotiation offers, remote candidates).
/// The signaling machine already caps candidates per offer (50) and offers per
/// session; a session that lets this many pile up is stuck, and more are dropped.
const SESSION_QUEUE: usize = 64;

/// Reports queued from all session tasks to the camera loop. Sessions wait when it is
/// full, so a burst slows them instead of growing memory.
pub const REPORT_QUEUE: usize = 1024;

struct Handle {
    generation: u64,
    tx: mpsc::Sender<SessionCmd>,
    cancel: CancellationToken,
    stats: Arc<SessionStats>,
    frontend: Frontend,
}

impl Handle {
    /// Queues `cmd` without waiting: the camera loop must never block on one session.
    fn queue(&self, session: &SessionId, cmd: SessionCmd) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(cmd) {
            log::warn!(session_id = session.as_str(); "session {session} is not taking its commands ({SESSION_QUEUE} queued); dropping one");
        }
    }
}

/// The session registry: one task per viewer.
pub struct Peers {
    settings: Arc<PeerSettings>,
    media: MediaFeeds,
    events: mpsc::Sender<PeerReport>,
    sessions: HashMap<SessionId, Handle>,
    next_generation: u64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    latency: Arc<LatencyHistogram>,
    first_frame: Arc<LatencyHistogram>,
    /// Counters of the sessions that ended.
    retired: SessionTotals,
}

impl Peers {
    /// A registry whose session tasks are tracked by `tracker` and cancelled with
    /// `shutdown`; their reports go to `events`.
    pub fn new(
        settings: PeerSettings,
        media: MediaFeeds,
        events: mpsc::Sender<PeerReport>,
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
            // Up to 10 s in 10 ms steps: a TURN/TCP set-up can take seconds.
            first_frame: Arc::new(LatencyHistogram::with_width_ms(10)),
            retired: SessionTotals::default(),
        }
    }

    /// Whether a report of `generation` still concerns the live `session`.
    pub fn is_current(&self, session: &SessionId, generation: u64) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|h| h.generation == generation)
    }

    /// Carries out one command of the signaling machine for an MQTT session.
    pub fn command(&mut self, cmd: PeerCommand) {
        self.command_for(cmd, Frontend::Mqtt);
    }

    /// Carries out one command of the signaling machine; a new session is set up for
    /// `frontend`.
    pub fn command_for(&mut self, cmd: PeerCommand, frontend: Frontend) {
        match cmd {
            PeerCommand::Offer { session, sdp } => {
                if let Some(h) = self.sessions.get(&session) {
                    h.queue(&session, SessionCmd::Offer(sdp));
                    return;
                }
                let generation = self.next_generation;
                self.next_generation += 1;
                let (tx, rx) = mpsc::channel(SESSION_QUEUE);
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
                    first_frame: self.first_frame.clone(),
                    offered_at: std::time::Instant::now(),
                    frontend,
                };
                let slot = PcSlot::default();
                let report = ReportTo {
                    session: session.clone(),
                    generation,
                    events: self.events.clone(),
                };
                self.tracker.spawn(supervise(
                    report,
                    slot.clone(),
                    session::run(ctx, sdp, rx, slot),
                ));
                self.sessions.insert(
                    session,
                    Handle {
                        generation,
                        tx,
                        cancel,
                        stats,
                        frontend,
                    },
                );
            }
            PeerCommand::AddCandidate { session, candidate } => {
                if let Some(h) = self.sessions.get(&session) {
                    h.queue(&session, SessionCmd::Candidate(candidate));
                }
            }
            PeerCommand::Close { session } => {
                if let Some(h) = self.sessions.remove(&session) {
                    h.cancel.cancel();
                    // Its last frames may still be counted as it stops; the few lost
                    // here are not worth holding the handle for.
                    self.retired.add(&h.stats);
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
            .map(|(id, h)| {
                let mut s = h.stats.snapshot(id.as_str());
                s.frontend = h.frontend.label();
                s
            })
            .collect();
        v.sort_by(|a, b| a.session.cmp(&b.session));
        v
    }

    /// Counters summed over every session since start, open and ended.
    pub fn totals(&self) -> SessionTotals {
        let mut t = self.retired;
        for h in self.sessions.values() {
            t.add(&h.stats);
        }
        t
    }

    /// The process-wide offer → first-video-frame-sent histogram (10 ms buckets).
    pub fn first_frame(&self) -> Arc<LatencyHistogram> {
        self.first_frame.clone()
    }

    /// The process-wide capture→RTP-send latency histogram.
    pub fn latency(&self) -> Arc<LatencyHistogram> {
        self.latency.clone()
    }
}

/// Where a supervised session's abnormal end is reported.
struct ReportTo {
    session: SessionId,
    generation: u64,
    events: mpsc::Sender<PeerReport>,
}

/// Runs one session future to its end. A panic or an `Err` closes the peer connection
/// the session registered in `slot` (its media tasks are aborted with it) and reports
/// [`PeerEvent::Aborted`] naming the cause; a normal end reports nothing here, the
/// session having reported for itself.
async fn supervise(
    to: ReportTo,
    slot: PcSlot,
    session: impl Future<Output = Result<(), SessionError>>,
) {
    let error = match AssertUnwindSafe(session).catch_unwind().await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(payload) => SessionError::Panicked(panic_text(payload.as_ref())),
    };
    if let Some(pc) = slot.take()
        && let Err(e) = pc.close().await
    {
        log::debug!(session_id = to.session.as_str(); "close after abort: {e}");
    }
    let _ = to
        .events
        .send(PeerReport {
            session: to.session,
            generation: to.generation,
            event: PeerEvent::Aborted(error.to_string()),
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder};

    struct NoEvents;
    #[async_trait::async_trait]
    impl webrtc::peer_connection::PeerConnectionEventHandler for NoEvents {}

    async fn loopback_pc() -> Arc<dyn PeerConnection> {
        let pc = PeerConnectionBuilder::new()
            .with_handler(Arc::new(NoEvents))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .expect("a loopback peer connection");
        Arc::new(pc)
    }

    fn report_to() -> (ReportTo, mpsc::Receiver<PeerReport>) {
        let (events, rx) = mpsc::channel(REPORT_QUEUE);
        let to = ReportTo {
            session: SessionId::parse("s1").expect("valid id"),
            generation: 7,
            events,
        };
        (to, rx)
    }

    /// An injected fault in a session that has built its peer connection: the
    /// boundary catches it, closes that peer connection and reports `Aborted`.
    #[tokio::test]
    async fn a_panicking_session_is_reported_and_its_peer_connection_closed() {
        let (to, mut rx) = report_to();
        let slot = PcSlot::default();
        let pc = loopback_pc().await;
        assert!(pc.create_offer(None).await.is_ok(), "open before the fault");
        let session = {
            let (slot, pc) = (slot.clone(), pc.clone());
            async move {
                slot.set(pc);
                tokio::task::yield_now().await;
                if std::hint::black_box(true) {
                    panic!("injected session fault");
                }
                Ok(())
            }
        };
        supervise(to, slot, session).await;
        let r = rx.try_recv().expect("one report");
        assert_eq!((r.session.as_str(), r.generation), ("s1", 7));
        assert_eq!(
            r.event,
            PeerEvent::Aborted("session task panicked: injected session fault".into())
        );
        assert!(
            pc.create_offer(None).await.is_err(),
            "the peer connection is closed"
        );
        assert!(rx.try_recv().is_err(), "exactly one report");
    }

    #[tokio::test]
    async fn a_session_error_is_reported_and_a_normal_end_is_not() {
        let (to, mut rx) = report_to();
        let failing = async { Err(SessionError::MediaTask("injected feed fault".into())) };
        supervise(to, PcSlot::default(), failing).await;
        assert_eq!(
            rx.try_recv().expect("one report").event,
            PeerEvent::Aborted("media task panicked: injected feed fault".into())
        );
        let (to, mut rx) = report_to();
        supervise(to, PcSlot::default(), async { Ok(()) }).await;
        assert!(rx.try_recv().is_err(), "a normal end reports nothing here");
    }
}
