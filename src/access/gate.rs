//! The invite-mode gate between the broker and the signaling machine, sans-IO: it
//! admits a viewer's message only with a valid signature from an unexpired, unrevoked
//! invitation (access-v1, "Signed messages"), drops replays, and seals the camera's
//! messages to the sessions whose key it learnt. Wall-clock time is passed in.

use super::keys::{Direction, Secret, ViewerKey, check_name};
use crate::signaling::protocol::{MAX_PAYLOAD_BYTES, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

/// Sessions whose key the gate remembers (to seal what the camera sends them), and
/// `(name, session)` pairs it remembers for replay detection; the oldest go first.
const REMEMBERED: usize = 4096;
/// With a synchronised clock, a signed request whose `ts` is further than this from
/// the camera's clock is refused, ms (access-v1: 5 minutes).
const TS_WINDOW_MS: u64 = 5 * 60 * 1000;

/// What the camera checks requests against.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// The camera id the keys are bound to.
    pub camera_id: String,
    /// The access secret `S`.
    pub secret: Secret,
    /// Viewer names whose invitations no longer count.
    pub revoked: HashSet<String>,
}

impl AccessPolicy {
    /// Whether an MQTT login (`username` = viewer name, `password` = its token) or an
    /// HTTP bearer token belongs to an unexpired, unrevoked invitation, at `now_s`
    /// (unix seconds). Access-v1, "Token".
    pub fn admits_token(&self, username: &str, token: &str, now_s: u64) -> bool {
        let mut parts = token.splitn(3, '.');
        let (Some(name), Some(exp), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(exp) = exp.parse::<u64>() else {
            return false;
        };
        if name != username
            || check_name(name).is_err()
            || exp <= now_s
            || self.revoked.contains(name)
        {
            return false;
        }
        ViewerKey::derive(&self.secret, &self.camera_id, name, exp).verify_token(
            &self.camera_id,
            name,
            exp,
            token,
        )
    }

    /// [`AccessPolicy::admits_token`] for a bearer token alone (the name is its first
    /// part).
    pub fn admits_bearer(&self, token: &str, now_s: u64) -> bool {
        let name = token.split('.').next().unwrap_or("");
        self.admits_token(name, token, now_s)
    }
}

/// A message the gate let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A verified signed message: its inner protocol 1 message, for the machine.
    Signed {
        /// The inner message's exact bytes.
        inner: String,
        /// The invitation's viewer name.
        name: String,
    },
    /// A message that may go unsigned (a `candidate`) or that is no request at all
    /// (not a JSON object): the machine answers it as protocol 1 says.
    Plain,
}

/// Why the gate refused a message: the text of the plain `error` `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthorized(pub &'static str);

#[derive(Debug, Deserialize)]
struct Envelope {
    v: u32,
    name: String,
    exp: u64,
    msg: String,
    mac: String,
}

#[derive(Debug, Serialize)]
struct SealedEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
    name: &'a str,
    exp: u64,
    msg: &'a str,
    mac: String,
}

#[derive(Debug, Clone)]
struct SessionKey {
    name: String,
    exp: u64,
    key: ViewerKey,
}

/// The last request accepted for one `(name, session)`.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ts: u64,
    digest: u64,
    /// The session ended since: the same bytes again are a replay, not a duplicate.
    ended: bool,
}

/// The gate of one camera in invite mode.
#[derive(Debug)]
pub struct Gate {
    policy: AccessPolicy,
    keys: HashMap<SessionId, SessionKey>,
    key_order: VecDeque<SessionId>,
    seen: HashMap<(String, SessionId), Seen>,
    seen_order: VecDeque<(String, SessionId)>,
}

fn digest(msg: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    msg.hash(&mut h);
    h.finish()
}

impl Gate {
    /// A gate that has admitted nothing yet.
    pub fn new(policy: AccessPolicy) -> Self {
        Self {
            policy,
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// The policy the gate checks against.
    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    /// Checks `payload`, received on `session`'s `to-camera` topic at `now_ms` (unix
    /// ms; `clock_synced` when that clock is known to be right).
    ///
    /// - A `signed` envelope is admitted when its name is well-formed, its invitation
    ///   unexpired and unrevoked, its MAC right, and (for `offer`, `config-request`
    ///   and `bye`) it is not a replay: the same bytes again (a protocol 1 duplicate)
    ///   or a `ts` newer than the last one accepted for this name and session pass,
    ///   anything older does not. With a synchronised clock, `ts` must also be within
    ///   5 minutes of `now_ms`.
    /// - An unsigned `candidate`, and anything that is not a JSON object, pass as
    ///   [`Admitted::Plain`] (the machine answers the latter with `bad-request`).
    ///
    /// # Errors
    /// [`Unauthorized`] for every other message: it must not reach the machine.
    pub fn admit(
        &mut self,
        session: &SessionId,
        payload: &[u8],
        now_ms: u64,
        clock_synced: bool,
    ) -> Result<Admitted, Unauthorized> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Ok(Admitted::Plain);
        }
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(payload) else {
            return Ok(Admitted::Plain);
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("signed") => {}
            Some("candidate") => return Ok(Admitted::Plain),
            _ => {
                return Err(Unauthorized(
                    "this camera admits only invited viewers: sign the request (access-v1)",
                ));
            }
        }
        let env: Envelope = serde_json::from_value(Value::Object(obj))
            .map_err(|_| Unauthorized("malformed signed envelope"))?;
        if env.v != 1 {
            return Err(Unauthorized("unsupported signed envelope version"));
        }
        check_name(&env.name).map_err(|_| Unauthorized("malformed viewer name"))?;
        if env.exp.saturating_mul(1000) <= now_ms {
            return Err(Unauthorized("invitation expired"));
        }
        if self.policy.revoked.contains(&env.name) {
            return Err(Unauthorized("invitation revoked"));
        }
        let key = ViewerKey::derive(
            &self.policy.secret,
            &self.policy.camera_id,
            &env.name,
            env.exp,
        );
        if !key.verify_message(
            Direction::ViewerToCamera,
            &self.policy.camera_id,
            session.as_str(),
            &env.msg,
            &env.mac,
        ) {
            return Err(Unauthorized("bad signature"));
        }
        let inner: Value = serde_json::from_str(&env.msg)
            .map_err(|_| Unauthorized("signed message is not JSON"))?;
        let kind = inner.get("type").and_then(Value::as_str).unwrap_or("");
        if matches!(kind, "offer" | "config-request" | "bye") {
            let ts = inner
                .get("ts")
                .and_then(Value::as_u64)
                .ok_or(Unauthorized("signed request without ts"))?;
            if clock_synced && ts.abs_diff(now_ms) > TS_WINDOW_MS {
                return Err(Unauthorized(
                    "request timestamp too far from the camera's clock",
                ));
            }
            self.check_replay(&env.name, session, ts, digest(&env.msg))?;
        }
        if matches!(kind, "offer" | "config-request") {
            self.remember_key(
                session,
                SessionKey {
                    name: env.name.clone(),
                    exp: env.exp,
                    key,
                },
            );
        }
        Ok(Admitted::Signed {
            inner: env.msg,
            name: env.name,
        })
    }

    fn check_replay(
        &mut self,
        name: &str,
        session: &SessionId,
        ts: u64,
        digest: u64,
    ) -> Result<(), Unauthorized> {
        let pair = (name.to_owned(), session.clone());
        match self.seen.get_mut(&pair) {
            // The same bytes again while the session lives: a protocol 1 duplicate,
            // answered as before.
            Some(seen) if seen.digest == digest && !seen.ended => Ok(()),
            Some(seen) if ts > seen.ts => {
                *seen = Seen {
                    ts,
                    digest,
                    ended: false,
                };
                Ok(())
            }
            Some(_) => Err(Unauthorized("replayed request")),
            None => {
                if self.seen_order.len() >= REMEMBERED
                    && let Some(old) = self.seen_order.pop_front()
                {
                    self.seen.remove(&old);
                }
                self.seen_order.push_back(pair.clone());
                self.seen.insert(
                    pair,
                    Seen {
                        ts,
                        digest,
                        ended: false,
                    },
                );
                Ok(())
            }
        }
    }

    fn remember_key(&mut self, session: &SessionId, key: SessionKey) {
        if !self.keys.contains_key(session) {
            if self.key_order.len() >= REMEMBERED
                && let Some(old) = self.key_order.pop_front()
            {
                self.keys.remove(&old);
            }
            self.key_order.push_back(session.clone());
        }
        self.keys.insert(session.clone(), key);
    }

    /// `session` ended (bye, timeout, kick): a captured request of it replayed now
    /// must not open it again, even byte for byte.
    pub fn session_ended(&mut self, session: &SessionId) {
        for ((_, s), seen) in &mut self.seen {
            if s == session {
                seen.ended = true;
            }
        }
    }

    /// The payload to publish for the camera's message `json` to `session`: signed
    /// with the session's key when the gate admitted a request on it, else `json`
    /// itself (an `unauthorized` error to a stranger goes plain).
    pub fn seal(&self, session: &SessionId, json: String) -> String {
        let Some(k) = self.keys.get(session) else {
            return json;
        };
        let mac = k.key.message_mac(
            Direction::CameraToViewer,
            &self.policy.camera_id,
            session.as_str(),
            &json,
        );
        serde_json::to_string(&SealedEnvelope {
            kind: "signed",
            v: 1,
            name: &k.name,
            exp: k.exp,
            msg: &json,
            mac,
        })
        .unwrap_or(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_798_600_000_000;
    const EXP: u64 = 1_798_675_200;

    fn secret() -> Secret {
        Secret::from_bytes([7; 32])
    }

    fn gate() -> Gate {
        Gate::new(AccessPolicy {
            camera_id: "porch".into(),
            secret: secret(),
            revoked: HashSet::from(["mallory".to_owned()]),
        })
    }

    fn sid(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    /// What a viewer holding `name`'s invitation sends.
    fn signed(name: &str, exp: u64, session: &str, msg: &str) -> Vec<u8> {
        let k = ViewerKey::derive(&secret(), "porch", name, exp);
        let mac = k.message_mac(Direction::ViewerToCamera, "porch", session, msg);
        serde_json::json!({"type":"signed","v":1,"name":name,"exp":exp,"msg":msg,"mac":mac})
            .to_string()
            .into_bytes()
    }

    fn offer(ts: u64) -> String {
        format!(r#"{{"type":"offer","sdp":"v=0\r\n","ts":{ts}}}"#)
    }

    #[test]
    fn an_invited_viewer_is_admitted_and_answered_under_its_key() {
        let mut g = gate();
        let msg = offer(NOW);
        let got = g.admit(&sid("s1"), &signed("alice", EXP, "s1", &msg), NOW, true);
        assert_eq!(
            got,
            Ok(Admitted::Signed {
                inner: msg,
                name: "alice".into()
            })
        );
        let sealed: Value =
            serde_json::from_str(&g.seal(&sid("s1"), r#"{"type":"answer","sdp":"x"}"#.into()))
                .unwrap();
        assert_eq!(sealed["type"], "signed");
        assert_eq!(sealed["name"], "alice");
        let k = ViewerKey::derive(&secret(), "porch", "alice", EXP);
        assert!(k.verify_message(
            Direction::CameraToViewer,
            "porch",
            "s1",
            sealed["msg"].as_str().unwrap(),
            sealed["mac"].as_str().unwrap()
        ));
        // A stranger's session gets plain messages.
        assert_eq!(g.seal(&sid("s2"), "{}".into()), "{}");
    }

    #[test]
    fn strangers_forgers_the_expired_and_the_revoked_are_unauthorized() {
        let mut g = gate();
        let s = sid("s1");
        let unsigned = offer(NOW).into_bytes();
        assert!(g.admit(&s, &unsigned, NOW, true).is_err());
        assert!(
            g.admit(&s, br#"{"type":"config-request"}"#, NOW, true)
                .is_err()
        );
        assert!(g.admit(&s, br#"{"type":"bye"}"#, NOW, true).is_err());
        // Signed with another camera's secret.
        let mut forged: Value =
            serde_json::from_slice(&signed("alice", EXP, "s1", &offer(NOW))).unwrap();
        forged["mac"] = Value::from(
            ViewerKey::derive(&Secret::from_bytes([8; 32]), "porch", "alice", EXP).message_mac(
                Direction::ViewerToCamera,
                "porch",
                "s1",
                &offer(NOW),
            ),
        );
        assert_eq!(
            g.admit(&s, forged.to_string().as_bytes(), NOW, true),
            Err(Unauthorized("bad signature"))
        );
        // Signed for another session: the MAC binds the topic's session id.
        assert_eq!(
            g.admit(
                &sid("s2"),
                &signed("alice", EXP, "s1", &offer(NOW)),
                NOW,
                true
            ),
            Err(Unauthorized("bad signature"))
        );
        // A name or expiry changed after signing.
        let mut renamed: Value =
            serde_json::from_slice(&signed("alice", EXP, "s1", &offer(NOW))).unwrap();
        renamed["exp"] = Value::from(EXP + 86_400);
        assert!(
            g.admit(&s, renamed.to_string().as_bytes(), NOW, true)
                .is_err()
        );
        assert_eq!(
            g.admit(
                &s,
                &signed("alice", NOW / 1000 - 1, "s1", &offer(NOW)),
                NOW,
                true
            ),
            Err(Unauthorized("invitation expired"))
        );
        assert_eq!(
            g.admit(&s, &signed("mallory", EXP, "s1", &offer(NOW)), NOW, true),
            Err(Unauthorized("invitation revoked"))
        );
        assert!(
            g.admit(&s, &signed("al ice", EXP, "s1", &offer(NOW)), NOW, true)
                .is_err()
        );
        // Nothing was learnt: the session still gets plain messages.
        assert_eq!(g.seal(&s, "{}".into()), "{}");
    }

    #[test]
    fn replays_are_refused_duplicates_and_newer_requests_pass() {
        let mut g = gate();
        let s = sid("s1");
        let first = signed("alice", EXP, "s1", &offer(NOW));
        assert!(g.admit(&s, &first, NOW, false).is_ok());
        // The identical message again is protocol 1's duplicate delivery.
        assert!(g.admit(&s, &first, NOW + 1000, false).is_ok());
        // A renegotiation (ICE restart, TURN refresh) is newer: it passes.
        let second = signed("alice", EXP, "s1", &offer(NOW + 60_000));
        assert!(g.admit(&s, &second, NOW + 60_000, false).is_ok());
        // Replaying the first one now is refused.
        assert_eq!(
            g.admit(&s, &first, NOW + 61_000, false),
            Err(Unauthorized("replayed request"))
        );
        // Without a synced clock an old ts is taken (first time); with one it is not.
        let old = signed("alice", EXP, "s9", &offer(NOW - 3_600_000));
        assert!(g.admit(&sid("s9"), &old, NOW, true).is_err());
        assert!(g.admit(&sid("s9"), &old, NOW, false).is_ok());
        // A request without ts is refused.
        let no_ts = signed("alice", EXP, "s3", r#"{"type":"config-request"}"#);
        assert_eq!(
            g.admit(&sid("s3"), &no_ts, NOW, false),
            Err(Unauthorized("signed request without ts"))
        );
    }

    #[test]
    fn candidates_may_be_plain_and_junk_goes_to_the_machine() {
        let mut g = gate();
        let s = sid("s1");
        let cand = br#"{"type":"candidate","candidate":null}"#;
        assert_eq!(g.admit(&s, cand, NOW, true), Ok(Admitted::Plain));
        assert_eq!(g.admit(&s, b"not json", NOW, true), Ok(Admitted::Plain));
        assert_eq!(
            g.admit(&s, &vec![b' '; MAX_PAYLOAD_BYTES + 1], NOW, true),
            Ok(Admitted::Plain)
        );
        assert!(
            g.admit(&s, br#"{"type":"signed","v":1}"#, NOW, true)
                .is_err()
        );
        assert!(
            g.admit(
                &s,
                br#"{"type":"signed","v":2,"name":"a","exp":1,"msg":"","mac":""}"#,
                NOW,
                true
            )
            .is_err()
        );
    }

    #[test]
    fn tokens_of_current_invitations_are_admitted() {
        let g = gate();
        let token =
            ViewerKey::derive(&secret(), "porch", "alice", EXP).token("porch", "alice", EXP);
        let now = NOW / 1000;
        assert!(g.policy.admits_token("alice", &token, now));
        assert!(g.policy.admits_bearer(&token, now));
        assert!(
            !g.policy.admits_token("bob", &token, now),
            "another user name"
        );
        assert!(!g.policy.admits_token("alice", &token, EXP), "expired");
        let revoked =
            ViewerKey::derive(&secret(), "porch", "mallory", EXP).token("porch", "mallory", EXP);
        assert!(!g.policy.admits_bearer(&revoked, now));
        let other_camera =
            ViewerKey::derive(&secret(), "garage", "alice", EXP).token("garage", "alice", EXP);
        assert!(!g.policy.admits_bearer(&other_camera, now));
        for junk in ["", "alice", "alice.x.y", "alice.1.", ".1.a"] {
            assert!(!g.policy.admits_bearer(junk, now), "{junk}");
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = gate();
        for i in 0..(REMEMBERED + 100) {
            let session = format!("s{i}");
            let msg = offer(NOW);
            assert!(
                g.admit(
                    &sid(&session),
                    &signed("alice", EXP, &session, &msg),
                    NOW,
                    true
                )
                .is_ok()
            );
        }
        assert_eq!(g.keys.len(), REMEMBERED);
        assert_eq!(g.seen.len(), REMEMBERED);
        assert_eq!(g.key_order.len(), REMEMBERED);
    }
}
