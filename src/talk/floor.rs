//! Who may talk through the camera's speaker, sans-IO (time is passed in): one talker
//! at a time, as on a half-duplex intercom. Mixing two viewers' voices into one
//! doorbell speaker helps no one and lets a second viewer drown out the first, so a
//! second talker is refused, not mixed.
//!
//! A viewer takes the floor by asking (`talk` on its control channel, [`Floor::claim`])
//! or, for viewers without a control channel, by sending audio while the floor is free
//! ([`Floor::packet`]). The floor is released by `talk-end`, by the session ending, or
//! after [`IDLE`] without a packet from the holder (a page that stops sending its
//! microphone, a viewer that vanished).
//!
//! A viewer that let the floor go does not take it back with the packets it still had
//! in flight (a page's microphone after its `talk-end`, the last packets of a session
//! that ended): for [`IDLE`] after a release its packets are refused unless it claims
//! again. Without that, a CI run saw a session that had already closed take the free
//! floor with one late packet, where the next viewer would have been refused.

use crate::signaling::protocol::SessionId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The holder loses the floor after this long without a packet (or, after a claim,
/// without its first packet).
pub const IDLE: Duration = Duration::from_secs(2);
/// Releases remembered at most (the oldest is forgotten first).
pub const LET_GO_MAX: usize = 16;

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the floor (it may have held it already).
    Granted,
    /// Another viewer is talking.
    Busy,
}

/// What to do with one received audio packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// Play it. `fresh` is true for the first packet of a new talker (start playback
    /// anew: new SSRC, sequence and timestamp space).
    Play {
        /// First packet since the floor changed hands.
        fresh: bool,
    },
    /// Drop it: another viewer holds the floor.
    Refuse,
    /// Drop it: its session let the floor go less than [`IDLE`] ago (a straggler).
    Late,
}

#[derive(Debug)]
struct Holder {
    session: SessionId,
    last: Instant,
    /// Whether a packet of this holder was played since it took the floor.
    playing: bool,
}

/// The floor: at most one holder.
#[derive(Debug, Default)]
pub struct Floor {
    holder: Option<Holder>,
    /// Sessions that released the floor within [`IDLE`], and when.
    let_go: VecDeque<(SessionId, Instant)>,
}

impl Floor {
    /// The session holding the floor, if any.
    pub fn holder(&self) -> Option<&SessionId> {
        self.holder.as_ref().map(|h| &h.session)
    }

    /// `session` asks for the floor at `now`: granted when it is free, held by
    /// `session` already, or held by a viewer idle for [`IDLE`].
    pub fn claim(&mut self, session: &SessionId, now: Instant) -> Claim {
        self.let_go.retain(|(s, _)| s != session);
        self.take(session, now)
    }

    fn take(&mut self, session: &SessionId, now: Instant) -> Claim {
        self.expire(now);
        match &mut self.holder {
            Some(h) if h.session == *session => {
                h.last = now;
                Claim::Granted
            }
            Some(_) => Claim::Busy,
            None => {
                self.holder = Some(Holder {
                    session: session.clone(),
                    last: now,
                    playing: false,
                });
                Claim::Granted
            }
        }
    }

    /// An audio packet from `session` arrived at `now`. A packet while the floor is free
    /// takes it (a viewer without a control channel talks by sending).
    pub fn packet(&mut self, session: &SessionId, now: Instant) -> Packet {
        self.let_go
            .retain(|(_, at)| now.saturating_duration_since(*at) < IDLE);
        if self.let_go.iter().any(|(s, _)| s == session) {
            return Packet::Late;
        }
        if self.take(session, now) == Claim::Busy {
            return Packet::Refuse;
        }
        let Some(h) = self.holder.as_mut() else {
            return Packet::Refuse;
        };
        let fresh = !std::mem::replace(&mut h.playing, true);
        Packet::Play { fresh }
    }

    /// `session` gives the floor up at `now` (`talk-end`, or its session ended); its
    /// packets are refused for [`IDLE`] unless it claims again. Returns whether it held
    /// the floor.
    pub fn release(&mut self, session: &SessionId, now: Instant) -> bool {
        self.let_go.retain(|(s, _)| s != session);
        if self.let_go.len() >= LET_GO_MAX {
            self.let_go.pop_front();
        }
        self.let_go.push_back((session.clone(), now));
        if self.holder().is_some_and(|h| h == session) {
            self.holder = None;
            true
        } else {
            false
        }
    }

    /// Frees the floor when its holder has been idle for [`IDLE`] at `now`; returns the
    /// session that lost it.
    pub fn expire(&mut self, now: Instant) -> Option<SessionId> {
        if self
            .holder
            .as_ref()
            .is_some_and(|h| now.saturating_duration_since(h.last) >= IDLE)
        {
            self.holder.take().map(|h| h.session)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    #[test]
    fn one_talker_at_a_time() {
        let t0 = Instant::now();
        let mut floor = Floor::default();
        assert_eq!(floor.claim(&id("a"), t0), Claim::Granted);
        assert_eq!(floor.claim(&id("b"), t0), Claim::Busy);
        assert_eq!(floor.packet(&id("b"), t0), Packet::Refuse);
        assert_eq!(floor.packet(&id("a"), t0), Packet::Play { fresh: true });
        assert_eq!(floor.packet(&id("a"), t0), Packet::Play { fresh: false });
        assert_eq!(floor.claim(&id("a"), t0), Claim::Granted);
        assert_eq!(floor.holder(), Some(&id("a")));
    }

    #[test]
    fn sending_takes_a_free_floor() {
        let t0 = Instant::now();
        let mut floor = Floor::default();
        assert_eq!(floor.packet(&id("a"), t0), Packet::Play { fresh: true });
        assert_eq!(floor.claim(&id("b"), t0), Claim::Busy);
    }

    #[test]
    fn release_and_idle_free_the_floor() {
        let t0 = Instant::now();
        let mut floor = Floor::default();
        floor.claim(&id("a"), t0);
        assert!(!floor.release(&id("b"), t0), "only the holder releases");
        assert!(floor.release(&id("a"), t0));
        assert_eq!(floor.holder(), None);
        // a's packets still in flight do not take the floor back; a claim does.
        assert_eq!(floor.packet(&id("a"), t0), Packet::Late);
        assert_eq!(floor.holder(), None);
        assert_eq!(floor.claim(&id("a"), t0), Claim::Granted);

        // Packets keep the holder's floor; silence for IDLE loses it.
        assert_eq!(floor.packet(&id("a"), t0), Packet::Play { fresh: true });
        let t1 = t0 + IDLE - Duration::from_millis(1);
        assert_eq!(floor.packet(&id("a"), t1), Packet::Play { fresh: false });
        assert_eq!(floor.expire(t1 + IDLE - Duration::from_millis(1)), None);
        assert_eq!(floor.packet(&id("b"), t1 + IDLE / 2), Packet::Refuse);
        assert_eq!(floor.expire(t1 + IDLE), Some(id("a")));
        assert_eq!(
            floor.packet(&id("b"), t1 + IDLE),
            Packet::Play { fresh: true }
        );
    }

    #[test]
    fn an_idle_claim_is_taken_over_and_the_new_holder_starts_fresh() {
        let t0 = Instant::now();
        let mut floor = Floor::default();
        assert_eq!(floor.claim(&id("a"), t0), Claim::Granted);
        // a claimed but never sent: after IDLE, b gets the floor.
        assert_eq!(floor.claim(&id("b"), t0 + IDLE), Claim::Granted);
        assert_eq!(floor.packet(&id("a"), t0 + IDLE), Packet::Refuse);
        assert_eq!(
            floor.packet(&id("b"), t0 + IDLE),
            Packet::Play { fresh: true }
        );
        // a back after b released: a fresh start again.
        floor.release(&id("b"), t0 + IDLE);
        assert_eq!(
            floor.packet(&id("a"), t0 + IDLE),
            Packet::Play { fresh: true }
        );
    }

    #[test]
    fn a_late_packet_of_a_session_that_let_go_does_not_take_the_floor() {
        let t0 = Instant::now();
        let mut floor = Floor::default();
        assert_eq!(floor.packet(&id("a"), t0), Packet::Play { fresh: true });
        assert!(floor.release(&id("a"), t0), "its session ended");
        let late = t0 + Duration::from_millis(100);
        assert_eq!(floor.packet(&id("a"), late), Packet::Late);
        assert_eq!(
            floor.claim(&id("b"), late),
            Claim::Granted,
            "the next viewer talks"
        );
        floor.release(&id("b"), late);
        // After IDLE a packet is no longer a straggler: sending takes a free floor.
        assert_eq!(
            floor.packet(&id("a"), t0 + IDLE),
            Packet::Play { fresh: true }
        );
        // The memory of releases is bounded.
        for i in 0..3 * LET_GO_MAX {
            floor.release(&id(&format!("s{i}")), t0);
        }
        assert_eq!(floor.let_go.len(), LET_GO_MAX);
    }
}
