//! The camera loop's side of WHEP (`crate::whep`): turns HTTP requests into messages
//! of the signaling machine for `whep-…` sessions, and routes the machine's replies
//! for those sessions back to the waiting HTTP request instead of MQTT.

use crate::ice::{IcePolicy, unix_now};
use crate::signaling::machine::Machine;
use crate::signaling::protocol::{ErrorCode, SessionId, ToViewer};
use crate::whep::{Created, WhepError, WhepRequest, new_session_id};
use serde_json::json;
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::oneshot;

struct Session {
    /// The `POST` waiting for its answer.
    pending: Option<oneshot::Sender<Result<Created, WhepError>>>,
    /// The offer's `a=ice-ufrag`: a `PATCH` with another one is an ICE restart.
    ufrag: Option<String>,
    /// The peer layer closed it while its `POST` waited: the refusal that explains why
    /// follows in the same batch of machine output (see [`WhepFront::settle`]).
    closed: bool,
}

/// The WHEP sessions the camera loop knows.
#[derive(Default)]
pub(super) struct WhepFront {
    sessions: HashMap<SessionId, Session>,
}

/// The first `a=ice-ufrag` of an SDP.
fn ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

fn refusal(code: ErrorCode, message: &str) -> WhepError {
    match code {
        ErrorCode::Busy => WhepError::Busy(message.to_owned()),
        ErrorCode::BadOffer | ErrorCode::BadRequest => WhepError::BadOffer(message.to_owned()),
        ErrorCode::UnknownSession => WhepError::NotFound,
        ErrorCode::Unauthorized | ErrorCode::Internal => WhepError::Internal(message.to_owned()),
    }
}

impl WhepFront {
    /// Whether `session` is a WHEP session.
    pub(super) fn owns(&self, session: &SessionId) -> bool {
        self.sessions.contains_key(session)
    }

    /// Carries out one HTTP request through `machine`.
    pub(super) fn request(&mut self, req: WhepRequest, machine: &mut Machine) {
        let now = Instant::now();
        let send = |machine: &mut Machine, id: &SessionId, msg: serde_json::Value| {
            machine.handle_message(now, id.clone(), msg.to_string().as_bytes());
        };
        match req {
            WhepRequest::Offer { sdp, reply } => {
                let id = new_session_id();
                self.sessions.insert(
                    id.clone(),
                    Session {
                        pending: Some(reply),
                        ufrag: ufrag(&sdp),
                        closed: false,
                    },
                );
                send(machine, &id, json!({"type": "offer", "sdp": sdp}));
            }
            WhepRequest::Patch {
                id,
                fragment,
                reply,
            } => {
                let Some(session) = self.sessions.get(&id) else {
                    let _ = reply.send(Err(WhepError::NotFound));
                    return;
                };
                if fragment.ufrag.is_some() && fragment.ufrag != session.ufrag {
                    let _ = reply.send(Err(WhepError::Unprocessable(
                        "ICE restarts are not supported: DELETE the session and POST a new offer"
                            .into(),
                    )));
                    return;
                }
                for c in fragment.candidates {
                    send(machine, &id, json!({"type": "candidate", "candidate": c}));
                }
                if fragment.end_of_candidates {
                    send(
                        machine,
                        &id,
                        json!({"type": "candidate", "candidate": null}),
                    );
                }
                let _ = reply.send(Ok(()));
            }
            WhepRequest::Delete { id, reply } => {
                if self.sessions.remove(&id).is_some() {
                    send(machine, &id, json!({"type": "bye"}));
                    let _ = reply.send(Ok(()));
                } else {
                    let _ = reply.send(Err(WhepError::NotFound));
                }
            }
        }
    }

    /// Takes the machine's `msg` for `session` if it is a WHEP session (`true`): the
    /// answer (whose SDP carries the camera's candidates) or a refusal completes the
    /// waiting `POST`; trickled candidates and configs have no WHEP transport and are
    /// dropped; `bye` forgets the session.
    pub(super) fn deliver(&mut self, session: &SessionId, msg: &ToViewer, ice: &IcePolicy) -> bool {
        let Some(entry) = self.sessions.get_mut(session) else {
            return false;
        };
        match msg {
            ToViewer::Answer { sdp } => {
                if let Some(reply) = entry.pending.take() {
                    let ice_servers = match ice.viewer_config(session, unix_now()) {
                        ToViewer::Config { ice_servers, .. } => ice_servers,
                        _ => Vec::new(),
                    };
                    let _ = reply.send(Ok(Created {
                        id: session.clone(),
                        answer: sdp.clone(),
                        ice_servers,
                    }));
                }
            }
            ToViewer::Error { code, message } => {
                if let Some(reply) = entry.pending.take() {
                    // A refused offer leaves no session behind.
                    let _ = reply.send(Err(refusal(*code, message)));
                    self.sessions.remove(session);
                } else {
                    log::info!(session_id = session.as_str(); "WHEP session: {code:?} {message}");
                }
            }
            ToViewer::Bye { .. } => {
                self.sessions.remove(session);
            }
            ToViewer::Candidate { .. } | ToViewer::Config { .. } => {}
        }
        true
    }

    /// The peer layer closed `session`. One whose `POST` still waits stays until
    /// [`WhepFront::settle`], so that the machine's refusal, which it emits right after
    /// the close, can still reach that `POST`.
    pub(super) fn closed(&mut self, session: &SessionId) {
        match self.sessions.get_mut(session) {
            Some(s) if s.pending.is_some() => s.closed = true,
            Some(_) => {
                self.sessions.remove(session);
            }
            None => {}
        }
    }

    /// After a batch of machine output: sessions closed without a refusal for their
    /// waiting `POST` answer it with an internal error, and are forgotten.
    pub(super) fn settle(&mut self) {
        self.sessions.retain(|_, s| {
            if !s.closed {
                return true;
            }
            if let Some(reply) = s.pending.take() {
                let _ = reply.send(Err(WhepError::Internal("the session ended".into())));
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::machine::{Limits, Output, PeerCommand, PeerEvent};
    use crate::whep::SdpFrag;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                         m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=ice-ufrag:abcd\r\n";

    /// Posts an offer through `front` and returns the session the machine opened for it.
    fn post(
        front: &mut WhepFront,
        machine: &mut Machine,
    ) -> (SessionId, oneshot::Receiver<Result<Created, WhepError>>) {
        let (reply, rx) = oneshot::channel();
        front.request(
            WhepRequest::Offer {
                sdp: OFFER.into(),
                reply,
            },
            machine,
        );
        let id = std::iter::from_fn(|| machine.poll_output())
            .find_map(|o| match o {
                Output::Peer(PeerCommand::Offer { session, .. }) => Some(session),
                _ => None,
            })
            .expect("the machine hands the offer to the peer layer");
        (id, rx)
    }

    /// What `app::drain` does with the machine's output, for WHEP sessions.
    fn drain(front: &mut WhepFront, machine: &mut Machine) {
        while let Some(out) = machine.poll_output() {
            match out {
                Output::Send { session, msg } => {
                    assert!(front.deliver(&session, &msg, &IcePolicy::default()));
                }
                Output::Peer(PeerCommand::Close { session }) => front.closed(&session),
                _ => {}
            }
        }
        front.settle();
    }

    #[test]
    fn a_rejected_offer_reaches_its_post_although_the_close_comes_first() {
        let (mut front, mut machine) = (
            WhepFront::default(),
            Machine::new(Limits::default(), Instant::now()),
        );
        let (id, mut rx) = post(&mut front, &mut machine);
        assert!(crate::whep::is_whep_id(&id) && front.owns(&id));
        machine.handle_peer(
            Instant::now(),
            id.clone(),
            PeerEvent::OfferRejected {
                code: ErrorCode::BadOffer,
                message: "no H.264".into(),
            },
        );
        drain(&mut front, &mut machine);
        assert_eq!(
            rx.try_recv().expect("answered"),
            Err(WhepError::BadOffer("no H.264".into()))
        );
        assert!(!front.owns(&id), "nothing is left behind");
    }

    #[test]
    fn an_answer_completes_the_post_and_patches_and_deletes_follow_the_session() {
        let (mut front, mut machine) = (
            WhepFront::default(),
            Machine::new(Limits::default(), Instant::now()),
        );
        let (id, mut rx) = post(&mut front, &mut machine);
        machine.handle_peer(
            Instant::now(),
            id.clone(),
            PeerEvent::Answer("v=0 answer".into()),
        );
        drain(&mut front, &mut machine);
        let created = rx.try_recv().expect("answered").expect("created");
        assert_eq!(
            (created.id.clone(), created.answer.as_str()),
            (id.clone(), "v=0 answer")
        );

        let patch = |front: &mut WhepFront, machine: &mut Machine, ufrag: &str, id: &SessionId| {
            let (reply, mut rx) = oneshot::channel();
            front.request(
                WhepRequest::Patch {
                    id: id.clone(),
                    fragment: SdpFrag {
                        ufrag: Some(ufrag.into()),
                        end_of_candidates: true,
                        ..SdpFrag::default()
                    },
                    reply,
                },
                machine,
            );
            rx.try_recv().expect("answered at once")
        };
        assert_eq!(patch(&mut front, &mut machine, "abcd", &id), Ok(()));
        assert!(matches!(
            patch(&mut front, &mut machine, "efgh", &id),
            Err(WhepError::Unprocessable(_))
        ));
        let (reply, mut rx) = oneshot::channel();
        front.request(
            WhepRequest::Delete {
                id: id.clone(),
                reply,
            },
            &mut machine,
        );
        assert_eq!(rx.try_recv().expect("answered"), Ok(()));
        assert_eq!(
            patch(&mut front, &mut machine, "abcd", &id),
            Err(WhepError::NotFound)
        );
    }
}
