//! Two-way audio: a viewer talks through the camera's speaker. Sessions hand the Opus
//! RTP packets they receive to one task, which keeps the [`floor`] (one talker at a
//! time) and plays the holder's packets on `[audio] playback_device`
//! ([`crate::media::playback`]). Data flows one way here too: sessions → floor →
//! playback.
//!
//! Everything a session sends is bounded: packets go through a queue of
//! [`PACKET_QUEUE`] and are dropped when it is full (audio that cannot be played in
//! time is worth nothing), and a packet is at most [`MAX_PACKET_BYTES`].

pub mod floor;

use crate::media::playback::Playback;
use crate::signaling::protocol::SessionId;
use crate::telemetry::{RateLimit, suppressed};
use floor::{Claim, Floor, Packet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Packets queued between the sessions and playback (about 1 s of 20 ms Opus from
/// the talker, the rest for refused senders' packets, which are dropped at once).
pub const PACKET_QUEUE: usize = 64;

/// Longest RTP packet accepted, bytes (a 120 ms Opus frame at 510 kbit/s is ~7.7 KB;
/// anything larger is not a voice).
pub const MAX_PACKET_BYTES: usize = 8 * 1024;

/// How often the floor is checked for an idle holder.
const TICK: Duration = Duration::from_millis(250);

/// Wait before playback is started again after it failed.
const RETRY: Duration = Duration::from_secs(1);

/// Counters of the talk-back path, for `/metrics`.
#[derive(Debug, Default)]
pub struct TalkCounters {
    /// Packets played (handed to the playback pipeline).
    pub played: AtomicU64,
    /// Packets dropped: another viewer held the floor.
    pub refused: AtomicU64,
    /// Packets dropped: queue full, oversized, or playback failed.
    pub dropped: AtomicU64,
    /// Times a viewer took the floor.
    pub turns: AtomicU64,
}

enum Msg {
    Packet {
        session: SessionId,
        pt: u8,
        rtp: Vec<u8>,
    },
    Claim {
        session: SessionId,
        reply: oneshot::Sender<Claim>,
    },
    Release {
        session: SessionId,
    },
}

/// A session's handle on talk-back (cheap to clone). Present only when
/// `[audio] playback_device` is set.
#[derive(Clone)]
pub struct Talkback {
    tx: mpsc::Sender<Msg>,
    counters: Arc<TalkCounters>,
}

impl std::fmt::Debug for Talkback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Talkback").finish_non_exhaustive()
    }
}

impl Talkback {
    /// Starts the talk-back task playing on ALSA PCM `device`; it runs until `cancel`.
    pub fn start(
        device: String,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PACKET_QUEUE);
        let counters = Arc::new(TalkCounters::default());
        tracker.spawn(run(device, rx, counters.clone(), cancel));
        Self { tx, counters }
    }

    /// The counters, for `/metrics`.
    pub fn counters(&self) -> &Arc<TalkCounters> {
        &self.counters
    }

    /// Hands over one RTP packet (payload type `pt`) received from `session`; dropped
    /// when the queue is full or it is larger than [`MAX_PACKET_BYTES`].
    pub fn packet(&self, session: &SessionId, pt: u8, rtp: Vec<u8>) {
        if rtp.len() > MAX_PACKET_BYTES {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let msg = Msg::Packet {
            session: session.clone(),
            pt,
            rtp,
        };
        if self.tx.try_send(msg).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks for the floor for `session` (the control channel's `talk`); `Busy` when
    /// another viewer is talking, or when talk-back has stopped.
    pub async fn claim(&self, session: &SessionId) -> Claim {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Claim {
            session: session.clone(),
            reply,
        };
        if self.tx.send(msg).await.is_err() {
            return Claim::Busy;
        }
        rx.await.unwrap_or(Claim::Busy)
    }

    /// Gives the floor up for `session` (`talk-end`, or the session ended); nothing
    /// when it did not hold it.
    pub async fn release(&self, session: &SessionId) {
        let _ = self
            .tx
            .send(Msg::Release {
                session: session.clone(),
            })
            .await;
    }
}

/// One talker's turn, for the line logged when it ends.
#[derive(Debug, Default)]
struct Turn {
    started: Option<Instant>,
    played: u64,
    dropped: u64,
}

impl Turn {
    fn start(now: Instant) -> Self {
        Self {
            started: Some(now),
            ..Self::default()
        }
    }

    /// Describes the turn, with what `playback`'s jitter buffer made of it, and resets
    /// it.
    fn end(&mut self, playback: Option<&Playback>) -> String {
        let t = std::mem::take(self);
        format!(
            "{} packets played, {} dropped, over {} ms{}",
            t.played,
            t.dropped,
            t.started.map_or(0, |s| s.elapsed().as_millis()),
            playback
                .map(|p| format!("; {}", p.jitter_stats()))
                .unwrap_or_default()
        )
    }
}

async fn run(
    device: String,
    mut rx: mpsc::Receiver<Msg>,
    counters: Arc<TalkCounters>,
    cancel: CancellationToken,
) {
    let mut floor = Floor::default();
    let mut playback: Option<Playback> = None;
    // This turn's packets: played, and dropped for a failing sound card or full queue.
    let mut turn = Turn::default();
    let mut failures = RateLimit::new(Duration::from_secs(30));
    let mut refusals = RateLimit::new(Duration::from_secs(10));
    // After playback failed to start, packets are dropped until then: a missing or
    // busy sound card is not reopened 50 times a second.
    let mut retry_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {
                if let Some(gone) = floor.expire(Instant::now()) {
                    log::info!(session_id = gone.as_str(); "talk-back: floor released (no audio for {} ms); {}", floor::IDLE.as_millis(), turn.end(playback.as_ref()));
                    playback = None;
                }
                continue;
            }
            msg = rx.recv() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        match msg {
            Msg::Claim { session, reply } => {
                let claim = floor.claim(&session, Instant::now());
                if claim == Claim::Busy {
                    log::info!(session_id = session.as_str(); "talk-back: refused, another viewer is talking");
                }
                let _ = reply.send(claim);
            }
            Msg::Release { session } => {
                if floor.release(&session, Instant::now()) {
                    log::info!(session_id = session.as_str(); "talk-back: floor released; {}", turn.end(playback.as_ref()));
                    playback = None;
                }
            }
            Msg::Packet { session, pt, rtp } => match floor.packet(&session, Instant::now()) {
                // In flight when its session let the floor go: not worth a line.
                Packet::Late => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                }
                Packet::Refuse => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = refusals.check(Instant::now()) {
                        log::info!(session_id = session.as_str(); "talk-back: dropping audio, another viewer holds the floor{}", suppressed(held_back));
                    }
                }
                Packet::Play { fresh } => {
                    if fresh {
                        turn = Turn::start(Instant::now());
                        counters.turns.fetch_add(1, Ordering::Relaxed);
                        log::info!(session_id = session.as_str(); "talk-back: viewer is talking, playing on {device:?}");
                        playback = None;
                    }
                    let now = Instant::now();
                    if playback.is_none() && retry_at.is_none_or(|t| now >= t) {
                        match Playback::start(&device, pt) {
                            Ok(p) => {
                                playback = Some(p);
                                retry_at = None;
                            }
                            Err(e) => {
                                retry_at = Some(now + RETRY);
                                if let Some(held_back) = failures.check(now) {
                                    log::warn!("{e}{}", suppressed(held_back));
                                }
                            }
                        }
                    }
                    let played = playback.as_ref().map(|p| p.push(&rtp));
                    match played {
                        Some(Ok(())) => {
                            turn.played += 1;
                            counters.played.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Err(e)) => {
                            turn.dropped += 1;
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            if let Some(held_back) = failures.check(Instant::now()) {
                                log::warn!("{e}{}", suppressed(held_back));
                            }
                            // Started again on a later packet.
                            playback = None;
                            retry_at = Some(Instant::now() + RETRY);
                        }
                        None => {
                            turn.dropped += 1;
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            },
        }
    }
}
