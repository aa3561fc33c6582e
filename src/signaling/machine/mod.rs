//! The sans-IO signaling state machine: every rule of the contract's "Rules" section that
//! is about sessions lives here, with time passed in, so it is tested in simulated time.
//!
//! Drive it like str0m: [`Machine::handle_message`] / [`Machine::handle_peer`] /
//! [`Machine::handle_timeout`], then drain [`Machine::poll_output`]; sleep until
//! [`Machine::poll_timeout`].

use super::protocol::{
    ByeReason, CandidateInit, ErrorCode, ProtocolError, SessionId, ToCamera, ToViewer,
    parse_to_camera,
};
use crate::budget::Bucket;
use crate::telemetry::{RateLimit, suppressed};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Limits the machine enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions whose offer passed validation (the peer layer answered it) allowed at
    /// once (`maxViewers`). An offer still being validated holds no slot: it is
    /// admitted, or refused with `busy`, when its answer is ready.
    pub max_viewers: u32,
    /// Offers of new sessions being validated at once (SDP checks, peer connection
    /// set-up: milliseconds, or up to 5 s while the encoder's first keyframe is
    /// awaited); more are refused with `busy`. Bounds the work unvalidated offers cause.
    pub max_validating: u32,
    /// ICE must reach `connected` this long after an offer (contract: 30 s).
    pub connect_timeout: Duration,
    /// New-session / renegotiation offers: bucket size.
    pub offer_burst: u32,
    /// New-session / renegotiation offers: refill per second.
    pub offers_per_sec: f64,
    /// All messages of all sessions: bucket size (floods beyond are dropped).
    pub message_burst: u32,
    /// All messages: refill per second.
    pub messages_per_sec: f64,
    /// Messages of one session: bucket size, so one flooding session cannot starve the
    /// others' signaling.
    pub session_message_burst: u32,
    /// Messages of one session: refill per second.
    pub session_messages_per_sec: f64,
    /// A session that has never reached ICE `connected` this long after its first
    /// offer may be displaced (ended with `bye` `timeout`) by a new viewer's offer when
    /// every slot is taken, oldest first; younger ones keep their slot, so a viewer
    /// still connecting is not pushed out by the next one.
    pub pending_grace: Duration,
    /// Remote ICE candidates a session may add per offer (an ICE restart starts the
    /// count again); more are skipped with a log line, as unusable candidates are
    /// (contract, "Rules"). A browser sends a handful.
    pub max_remote_candidates: u32,
    /// Status republish interval floor (contract: at most once per second).
    pub status_interval: Duration,
    /// When a live session that received minted TURN credentials gets a fresh `config`,
    /// counted from the previous one (contract: "before the old credentials expire, by
    /// default 5 minutes before"). `None` when nothing handed out expires.
    pub config_refresh_after: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_viewers: 10,
            max_validating: 16,
            connect_timeout: Duration::from_secs(30),
            offer_burst: 20,
            offers_per_sec: 5.0,
            message_burst: 500,
            messages_per_sec: 200.0,
            session_message_burst: 60,
            session_messages_per_sec: 20.0,
            pending_grace: Duration::from_secs(2),
            max_remote_candidates: 50,
            status_interval: Duration::from_secs(1),
            config_refresh_after: None,
        }
    }
}

/// What the peer layer reports about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The SDP answer to the latest offer.
    Answer(String),
    /// A gathered camera candidate; `None` once gathering is complete.
    LocalCandidate(Option<CandidateInit>),
    /// ICE (and DTLS) reached `connected`.
    Connected,
    /// The offer could not be answered; the session is gone.
    OfferRejected {
        /// `bad-offer` or `internal`.
        code: ErrorCode,
        /// Detail for the viewer.
        message: String,
    },
    /// The connection failed after it was set up; the session is gone.
    Failed(String),
    /// The session's task ended abnormally (a panic or an internal error of edgecam,
    /// not of the viewer); its peer connection is closed and the session is gone.
    Aborted(String),
}

/// Work for the peer layer (one `RTCPeerConnection` per session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCommand {
    /// Apply an SDP offer (creating the session if new) and produce an answer.
    Offer {
        /// Session.
        session: SessionId,
        /// SDP offer text.
        sdp: String,
    },
    /// Add a remote ICE candidate, `None` = end of candidates.
    AddCandidate {
        /// Session.
        session: SessionId,
        /// The candidate.
        candidate: Option<CandidateInit>,
    },
    /// Close and forget the session.
    Close {
        /// Session.
        session: SessionId,
    },
}

/// What the machine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Publish `msg` on the session's `to-viewer` topic.
    Send {
        /// Session.
        session: SessionId,
        /// Message.
        msg: ToViewer,
    },
    /// Answer a `config-request`: the driver builds the `config` message (it needs the
    /// wall clock and the TURN secret) and publishes it.
    SendConfig {
        /// Session.
        session: SessionId,
    },
    /// Hand a command to the peer layer.
    Peer(PeerCommand),
    /// Republish the retained status with this many open sessions.
    Status {
        /// Open sessions.
        viewers: u32,
    },
}

#[derive(Debug)]
struct Session {
    /// SDP of the latest offer: a duplicate delivery of it is ignored.
    last_offer: String,
    /// Deadline for ICE `connected` while negotiating; `None` once connected.
    connect_deadline: Option<Instant>,
    /// When this session's TURN credentials need a fresh `config`.
    refresh_at: Option<Instant>,
    /// Remote candidates taken since the latest offer.
    remote_candidates: u32,
    /// When its first offer arrived.
    opened_at: Instant,
    /// Whether ICE has ever reached `connected`: only a session that never did can be
    /// displaced.
    ever_connected: bool,
    /// Whether its offer passed validation (the peer layer answered it): only admitted
    /// sessions count against `max_viewers`.
    admitted: bool,
}

/// The signaling state machine for one camera.
#[derive(Debug)]
pub struct Machine {
    limits: Limits,
    sessions: HashMap<SessionId, Session>,
    offers: Bucket,
    messages: Bucket,
    /// Per-session message budgets, pruned when idle, bounded in number.
    session_messages: HashMap<SessionId, Bucket>,
    out: VecDeque<Output>,
    shutting_down: bool,
    /// Viewer count last announced, and when.
    announced: (u32, Instant),
    /// A status change waiting for the rate limit.
    status_due: Option<Instant>,
    flood_dropped: u64,
    flood_logged_at: Option<Instant>,
    bad_request_log: RateLimit,
    /// Refresh instants of `config`s sent before their session's offer, bounded.
    pending_refresh: HashMap<SessionId, Instant>,
}

impl Machine {
    /// A machine with no sessions, created at `now`; the driver has announced the
    /// initial status (0 viewers) itself, so the first change may follow at once.
    pub fn new(limits: Limits, now: Instant) -> Self {
        let offers = Bucket::new(limits.offer_burst, limits.offers_per_sec);
        let messages = Bucket::new(limits.message_burst, limits.messages_per_sec);
        Self {
            limits,
            sessions: HashMap::new(),
            offers,
            messages,
            session_messages: HashMap::new(),
            out: VecDeque::new(),
            shutting_down: false,
            // Backdated so the first change is announced at once.
            announced: (0, now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)),
            status_due: None,
            flood_dropped: 0,
            flood_logged_at: None,
            bad_request_log: RateLimit::new(Duration::from_secs(10)),
            pending_refresh: HashMap::new(),
        }
    }

    /// Open sessions (offer received, not yet ended): the status's `viewers`
    /// (signaling-v1, "Rules"). Offers still being validated are included, so it may
    /// briefly exceed [`Machine::admitted`].
    pub fn viewers(&self) -> u32 {
        u32::try_from(self.sessions.len()).unwrap_or(u32::MAX)
    }

    /// Sessions whose offer passed validation: what `max_viewers` limits.
    pub fn admitted(&self) -> u32 {
        let n = self.sessions.values().filter(|s| s.admitted).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn validating(&self) -> u32 {
        self.viewers() - self.admitted()
    }

    /// Whether `session` is open.
    pub fn has_session(&self, session: &SessionId) -> bool {
        self.sessions.contains_key(session)
    }

    /// Handles one payload that arrived on `session`'s `to-camera` topic.
    ///
    /// Budgets: every session has its own; the shared one applies only to messages for
    /// sessions that do not exist (yet), so a flood from rotating session ids never
    /// starves a live session's signaling (an ICE restart's offer and candidates).
    pub fn handle_message(&mut self, now: Instant, session: SessionId, payload: &[u8]) {
        let live = self.sessions.contains_key(&session);
        if !self.take_session_budget(now, &session) || (!live && !self.messages.take(now)) {
            self.flood_dropped += 1;
            self.log_flood(now);
            return;
        }
        match parse_to_camera(payload) {
            Ok(msg) => self.handle_parsed(now, session, msg),
            Err(e) => self.reject_bad_request(now, &session, &e),
        }
    }

    fn take_session_budget(&mut self, now: Instant, session: &SessionId) -> bool {
        const MAX_TRACKED: usize = 10_000;
        if let Some(bucket) = self.session_messages.get_mut(session) {
            return bucket.take(now);
        }
        if self.session_messages.len() >= MAX_TRACKED {
            // Too many distinct ids at once: the global budget alone applies.
            return true;
        }
        let mut bucket = Bucket::new(
            self.limits.session_message_burst,
            self.limits.session_messages_per_sec,
        );
        let ok = bucket.take(now);
        self.session_messages.insert(session.clone(), bucket);
        ok
    }

    fn reject_bad_request(&mut self, now: Instant, session: &SessionId, e: &ProtocolError) {
        // Every bad message gets its `error`; the log gets one line per window.
        if let Some(held_back) = self.bad_request_log.check(now) {
            log::warn!(session_id = session.as_str(); "bad request on session {session}: {e}{}", suppressed(held_back));
        }
        // Contract: an error in reply to anything but offer/config-request leaves a live
        // session as it was; an unparseable message has no type, so it ends nothing.
        self.send(
            session.clone(),
            ToViewer::error(ErrorCode::BadRequest, e.to_string()),
        );
    }

    fn handle_parsed(&mut self, now: Instant, session: SessionId, msg: ToCamera) {
        match msg {
            ToCamera::ConfigRequest => {
                if let Some(reason) = self.refusal_for_new_session(now, &session) {
                    log::info!(session_id = session.as_str(); "config-request refused: {reason}");
                    self.send(session, ToViewer::error(ErrorCode::Busy, reason));
                } else {
                    self.send_config(now, session);
                }
            }
            ToCamera::Offer { sdp } => self.handle_offer(now, session, sdp),
            ToCamera::Candidate(candidate) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    // End-of-candidates is not a candidate and always passes.
                    if candidate.is_some() {
                        if s.remote_candidates >= self.limits.max_remote_candidates {
                            if s.remote_candidates == self.limits.max_remote_candidates {
                                log::info!(session_id = session.as_str(); "session {session}: more than {} remote candidates; skipping the rest until the next offer", self.limits.max_remote_candidates);
                            }
                            s.remote_candidates = s.remote_candidates.saturating_add(1);
                            return;
                        }
                        s.remote_candidates += 1;
                    }
                    self.out.push_back(Output::Peer(PeerCommand::AddCandidate {
                        session,
                        candidate,
                    }));
                } else {
                    log::info!(session_id = session.as_str(); "candidate for unknown session {session}");
                    self.send(
                        session,
                        ToViewer::error(ErrorCode::UnknownSession, "no such session"),
                    );
                }
            }
            ToCamera::Bye => {
                if self.sessions.remove(&session).is_some() {
                    log::info!(session_id = session.as_str(); "viewer {session} said bye");
                    self.out
                        .push_back(Output::Peer(PeerCommand::Close { session }));
                    self.viewers_changed(now);
                }
                // A bye for a session that no longer exists is ignored silently.
            }
        }
    }

    /// Why a session that does not exist yet may not be created, if it may not.
    /// At the viewer limit, a session that could be displaced (see `displaceable`)
    /// still leaves room; the final word comes when the offer is answered (`admit`).
    fn refusal_for_new_session(&self, now: Instant, session: &SessionId) -> Option<&'static str> {
        if self.shutting_down {
            Some("camera is shutting down")
        } else if self.sessions.contains_key(session) {
            None
        } else if self.admitted() >= self.limits.max_viewers && self.displaceable(now).is_none() {
            Some("viewer limit reached")
        } else {
            None
        }
    }

    /// The admitted, never-connected session to end so that a new one fits: the oldest
    /// whose first offer is at least `pending_grace` old.
    fn displaceable(&self, now: Instant) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| {
                s.admitted
                    && !s.ever_connected
                    && now.saturating_duration_since(s.opened_at) >= self.limits.pending_grace
            })
            .min_by_key(|&(id, s)| (s.opened_at, id))
            .map(|(id, _)| id.clone())
    }

    fn handle_offer(&mut self, now: Instant, session: SessionId, sdp: String) {
        if let Some(existing) = self.sessions.get(&session)
            && existing.last_offer == sdp
        {
            log::debug!(session_id = session.as_str(); "duplicate offer ignored");
            return;
        }
        // What a renegotiation keeps of its session.
        let previous = self
            .sessions
            .get(&session)
            .map(|s| (s.refresh_at, s.opened_at, s.ever_connected, s.admitted));
        // A live session's renegotiation (ICE restart, TURN refresh) is never refused
        // because of other clients' traffic: only new sessions draw on the shared offer
        // budget and the viewer limit.
        let refusal = self
            .refusal_for_new_session(now, &session)
            .or_else(|| {
                (previous.is_none() && self.validating() >= self.limits.max_validating)
                    .then_some("too many offers being set up, retry later")
            })
            .or_else(|| {
                (previous.is_none() && !self.offers.take(now))
                    .then_some("offer rate limit hit, retry later")
            });
        if let Some(reason) = refusal {
            log::warn!(session_id = session.as_str(); "offer refused: {reason}");
            // An error in reply to an offer means no session exists afterwards.
            self.end_silently(now, &session);
            self.send(session, ToViewer::error(ErrorCode::Busy, reason));
            return;
        }
        let (refresh_at, opened_at, ever_connected, admitted) =
            previous.unwrap_or_else(|| (self.pending_refresh.remove(&session), now, false, false));
        self.sessions.insert(
            session.clone(),
            Session {
                last_offer: sdp.clone(),
                connect_deadline: Some(now + self.limits.connect_timeout),
                refresh_at,
                remote_candidates: 0,
                opened_at,
                ever_connected,
                admitted,
            },
        );
        if previous.is_some() {
            log::info!(session_id = session.as_str(); "renegotiation offer on {session}");
        } else {
            log::info!(session_id = session.as_str(); "new session {session}");
            self.viewers_changed(now);
        }
        self.out
            .push_back(Output::Peer(PeerCommand::Offer { session, sdp }));
    }

    /// Handles what the peer layer reports about `session`.
    pub fn handle_peer(&mut self, now: Instant, session: SessionId, event: PeerEvent) {
        if !self.sessions.contains_key(&session) {
            // The session ended while the peer layer was busy with it; nothing to tell.
            return;
        }
        match event {
            PeerEvent::Answer(sdp) => {
                if self.admit(now, &session) {
                    self.send(session, ToViewer::Answer { sdp });
                }
            }
            PeerEvent::LocalCandidate(candidate) => {
                self.send(session, ToViewer::Candidate { candidate });
            }
            PeerEvent::Connected => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.connect_deadline = None;
                    s.ever_connected = true;
                }
            }
            PeerEvent::OfferRejected { code, message } => {
                log::warn!(session_id = session.as_str(); "offer rejected ({code:?}): {message}");
                self.end_silently(now, &session);
                self.send(session, ToViewer::error(code, message));
            }
            PeerEvent::Failed(why) => {
                log::warn!(session_id = session.as_str(); "session {session} failed: {why}");
                self.end_with_bye(now, session, ByeReason::Failed);
            }
            PeerEvent::Aborted(why) => {
                // Contract: an error ends the session and no `bye` follows it. The cause
                // stays in the log; the viewer learns only that it was not its fault.
                log::error!(session_id = session.as_str(); "session {session} aborted by an internal failure: {why}");
                self.end_silently(now, &session);
                self.send(
                    session,
                    ToViewer::error(ErrorCode::Internal, "camera error, retry".to_owned()),
                );
            }
        }
    }

    /// Admits `session`, whose offer the peer layer has just answered, unless every slot
    /// is taken by admitted sessions none of which may be displaced: then it ends with
    /// `busy` (an error in reply to its offer, so no `bye`). Returns whether the answer
    /// may be sent.
    fn admit(&mut self, now: Instant, session: &SessionId) -> bool {
        if self.sessions.get(session).is_none_or(|s| s.admitted) {
            return true;
        }
        if self.admitted() >= self.limits.max_viewers {
            match self.displaceable(now) {
                Some(old) => {
                    log::warn!(session_id = old.as_str(); "session {old} never connected and every slot is taken: ending it for a new viewer");
                    self.end_with_bye(now, old, ByeReason::Timeout);
                }
                None => {
                    log::warn!(session_id = session.as_str(); "offer refused after validation: viewer limit reached");
                    self.end_silently(now, session);
                    self.send(
                        session.clone(),
                        ToViewer::error(ErrorCode::Busy, "viewer limit reached"),
                    );
                    return false;
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(session) {
            s.admitted = true;
        }
        true
    }

    /// Ends every session with `bye` reason `shutdown` and refuses new ones.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let mut ids: Vec<_> = self.sessions.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.end_with_bye(now, id, ByeReason::Shutdown);
        }
    }

    /// Ends `session` with `bye` reason `kicked`. Returns whether it existed.
    pub fn kick(&mut self, now: Instant, session: &SessionId) -> bool {
        let existed = self.sessions.contains_key(session);
        if existed {
            self.end_with_bye(now, session.clone(), ByeReason::Kicked);
        }
        existed
    }

    /// Asks the driver for a `config` and schedules its refresh.
    fn send_config(&mut self, now: Instant, session: SessionId) {
        const MAX_PENDING: usize = 1_000;
        if let Some(after) = self.limits.config_refresh_after {
            let at = now + after;
            if let Some(s) = self.sessions.get_mut(&session) {
                s.refresh_at = Some(at);
            } else if self.pending_refresh.len() < MAX_PENDING
                || self.pending_refresh.contains_key(&session)
            {
                self.pending_refresh.insert(session.clone(), at);
            }
        }
        self.out.push_back(Output::SendConfig { session });
    }

    fn end_with_bye(&mut self, now: Instant, session: SessionId, reason: ByeReason) {
        if self.sessions.remove(&session).is_some() {
            self.out.push_back(Output::Peer(PeerCommand::Close {
                session: session.clone(),
            }));
            self.send(session, ToViewer::Bye { reason });
            self.viewers_changed(now);
        }
    }

    fn end_silently(&mut self, now: Instant, session: &SessionId) {
        if self.sessions.remove(session).is_some() {
            self.out.push_back(Output::Peer(PeerCommand::Close {
                session: session.clone(),
            }));
            self.viewers_changed(now);
        }
    }

    /// Sessions whose `deadline` (connect timeout, credential refresh) is at or before
    /// `now`, in id order so outputs are deterministic.
    fn due(&self, now: Instant, deadline: impl Fn(&Session) -> Option<Instant>) -> Vec<SessionId> {
        let mut ids: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| deadline(s).is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Advances time: ends sessions past their connect deadline, releases a rate-limited
    /// status, and logs flood drops in batches.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in self.due(now, |s| s.connect_deadline) {
            log::warn!(session_id = id.as_str(); "session {id} did not connect in time");
            self.end_with_bye(now, id, ByeReason::Timeout);
        }
        for id in self.due(now, |s| s.refresh_at) {
            log::info!(session_id = id.as_str(); "TURN credentials of {id} expire soon: sending a fresh config");
            self.send_config(now, id);
        }
        // A config-request whose offer never came holds nothing worth refreshing.
        self.pending_refresh.retain(|_, at| *at > now);
        if self.status_due.is_some_and(|d| d <= now) {
            self.announce(now);
        }
        // A budget idle long enough to be full again carries no state worth keeping.
        self.session_messages.retain(|_, b| {
            b.last_used()
                .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(10))
        });
        self.log_flood(now);
    }

    /// The next instant [`Machine::handle_timeout`] has work to do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self
            .sessions
            .values()
            .flat_map(|s| [s.connect_deadline, s.refresh_at])
            .flatten();
        deadlines.chain(self.status_due).min()
    }

    /// The next output, or `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn send(&mut self, session: SessionId, msg: ToViewer) {
        self.out.push_back(Output::Send { session, msg });
    }

    fn viewers_changed(&mut self, now: Instant) {
        let (count, at) = self.announced;
        if count == self.viewers() {
            self.status_due = None;
            return;
        }
        let earliest = at + self.limits.status_interval;
        if now >= earliest {
            self.announce(now);
        } else {
            self.status_due = Some(earliest);
        }
    }

    fn announce(&mut self, now: Instant) {
        let viewers = self.viewers();
        self.status_due = None;
        if self.announced.0 == viewers {
            return;
        }
        self.announced = (viewers, now);
        self.out.push_back(Output::Status { viewers });
    }

    fn log_flood(&mut self, now: Instant) {
        if self.flood_dropped == 0 {
            return;
        }
        if self
            .flood_logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        log::warn!(
            "message flood: dropped {} signaling messages over the rate limit",
            self.flood_dropped
        );
        self.flood_dropped = 0;
        self.flood_logged_at = Some(now);
    }
}

#[cfg(test)]
mod tests;
