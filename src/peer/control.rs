//! The `control` data channel's protocol, sans-IO (documented for viewers in
//! `docs/signaling.md`, "Control channel"): a viewer opens a data channel labelled
//! `control` (RFC 8831/8832, in-band DCEP) and sends JSON text messages
//! `{"id": 1, "cmd": "snapshot"}`; each gets one JSON reply carrying the same `id`.
//!
//! Commands: `snapshot` (a JPEG of the current picture, sent after the reply as binary
//! messages of at most [`CHUNK_BYTES`]), `stats` (this session's counters), `keyframe`
//! (an IDR for this viewer, coalesced with the others' requests), `talk` / `talk-end`
//! (take and give up the floor for two-way audio: one talker at a time) and `ptz`
//! (reserved: answered `unsupported`). Anything else is refused, and all of it is held
//! to a budget.

use crate::budget::Bucket;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::Instant;

/// The label a viewer's control channel must carry; channels with other labels are
/// closed.
pub const LABEL: &str = "control";

/// Longest request accepted, bytes; longer ones are answered `bad-request`.
pub const MAX_REQUEST_BYTES: usize = 1024;

/// Longest `id` accepted, characters (a string id) .
pub const MAX_ID_CHARS: usize = 64;

/// A snapshot's JPEG is sent in binary messages of at most this many bytes: the size
/// every implementation takes whole (RFC 8831 §6.6).
pub const CHUNK_BYTES: usize = 16 * 1024;

/// Commands a viewer may send per second in the long run, and in one burst.
const COMMANDS_PER_SEC: f64 = 5.0;
const COMMAND_BURST: u32 = 10;
/// Snapshots per second in the long run, and in one burst (each may encode a JPEG).
const SNAPSHOTS_PER_SEC: f64 = 1.0;
const SNAPSHOT_BURST: u32 = 2;

/// A request's `id`, echoed in its reply: a number or a short string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A number (JSON integer ≥ 0).
    Number(u64),
    /// A string of at most [`MAX_ID_CHARS`] characters.
    Text(String),
}

/// A command the camera carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A JPEG of the current picture.
    Snapshot,
    /// This session's counters.
    Stats,
    /// An IDR for this viewer.
    Keyframe,
    /// Take the floor to talk through the camera's speaker (one talker at a time).
    Talk,
    /// Give the floor up.
    TalkEnd,
}

impl Command {
    /// The command's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Stats => "stats",
            Self::Keyframe => "keyframe",
            Self::Talk => "talk",
            Self::TalkEnd => "talk-end",
        }
    }
}

/// Error codes of a refused request (`"error"` in the reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlError {
    /// Not a JSON object with a string `cmd`, too long, binary, or a bad `id`.
    BadRequest,
    /// `cmd` names no command.
    UnknownCommand,
    /// A reserved command this camera does not implement (`ptz`).
    Unsupported,
    /// Over the channel's budget; later requests over budget get no reply at all
    /// until the budget has refilled.
    RateLimited,
    /// The command could not be carried out now (e.g. no picture yet).
    Unavailable,
    /// `talk` while another viewer is talking.
    Busy,
}

impl ControlError {
    /// The code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::UnknownCommand => "unknown-command",
            Self::Unsupported => "unsupported",
            Self::RateLimited => "rate-limited",
            Self::Unavailable => "unavailable",
            Self::Busy => "busy",
        }
    }
}

/// What to do with one incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this text reply (a refusal), nothing else.
    Reply(String),
    /// Carry out `cmd`, then reply with [`ok`] or [`refusal`].
    Run {
        /// The request's id.
        id: Option<RequestId>,
        /// What to do.
        cmd: Command,
    },
    /// Over budget again: drop without a reply (a flood earns no traffic back).
    Ignore,
}

#[derive(Deserialize)]
struct Request {
    id: Option<RequestId>,
    cmd: String,
}

/// One control channel's state: its budgets.
#[derive(Debug)]
pub struct Control {
    commands: Bucket,
    snapshots: Bucket,
    /// Whether the last refusal for budget was answered (the next one is not).
    told_rate_limited: bool,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            commands: Bucket::new(COMMAND_BURST, COMMANDS_PER_SEC),
            snapshots: Bucket::new(SNAPSHOT_BURST, SNAPSHOTS_PER_SEC),
            told_rate_limited: false,
        }
    }
}

impl Control {
    /// Decides what to do with one message received at `now`: `text` says whether it
    /// came as a text (UTF-8) message.
    pub fn handle(&mut self, now: Instant, data: &[u8], text: bool) -> Action {
        if !self.commands.take(now) {
            return self.over_budget(None);
        }
        if !text || data.len() > MAX_REQUEST_BYTES {
            return Action::Reply(refusal(
                None,
                None,
                ControlError::BadRequest,
                "requests are JSON text messages of at most 1024 bytes",
            ));
        }
        let Ok(req) = serde_json::from_slice::<Request>(data) else {
            return Action::Reply(refusal(
                None,
                None,
                ControlError::BadRequest,
                "not a JSON object with a string \"cmd\"",
            ));
        };
        if let Some(RequestId::Text(t)) = &req.id
            && t.chars().count() > MAX_ID_CHARS
        {
            return Action::Reply(refusal(
                None,
                Some(&req.cmd),
                ControlError::BadRequest,
                "\"id\" is longer than 64 characters",
            ));
        }
        let cmd = match req.cmd.as_str() {
            "snapshot" => Command::Snapshot,
            "stats" => Command::Stats,
            "keyframe" => Command::Keyframe,
            "talk" => Command::Talk,
            "talk-end" => Command::TalkEnd,
            "ptz" => {
                return Action::Reply(refusal(
                    req.id.as_ref(),
                    Some("ptz"),
                    ControlError::Unsupported,
                    "this camera has no pan, tilt or zoom",
                ));
            }
            _ => {
                return Action::Reply(refusal(
                    req.id.as_ref(),
                    None,
                    ControlError::UnknownCommand,
                    "known commands: snapshot, stats, keyframe, talk, talk-end, ptz",
                ));
            }
        };
        if cmd == Command::Snapshot && !self.snapshots.take(now) {
            return self.over_budget(req.id.as_ref());
        }
        self.told_rate_limited = false;
        Action::Run { id: req.id, cmd }
    }

    fn over_budget(&mut self, id: Option<&RequestId>) -> Action {
        if std::mem::replace(&mut self.told_rate_limited, true) {
            return Action::Ignore;
        }
        Action::Reply(refusal(
            id,
            None,
            ControlError::RateLimited,
            "too many requests: at most 5 commands and 1 snapshot per second",
        ))
    }
}

fn envelope(id: Option<&RequestId>, cmd: Option<&str>, ok: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(id) = id {
        m.insert("id".into(), json!(id));
    }
    if let Some(cmd) = cmd {
        m.insert("cmd".into(), json!(cmd));
    }
    m.insert("ok".into(), json!(ok));
    m
}

/// The reply to a command carried out: `{"id", "cmd", "ok": true}` plus `fields`.
pub fn ok(id: Option<&RequestId>, cmd: Command, fields: Map<String, Value>) -> String {
    let mut m = envelope(id, Some(cmd.name()), true);
    m.extend(fields);
    Value::Object(m).to_string()
}

/// A refusal: `{"id", "cmd", "ok": false, "error": <code>, "message": <text>}` (`id`
/// and `cmd` when known).
pub fn refusal(
    id: Option<&RequestId>,
    cmd: Option<&str>,
    error: ControlError,
    message: &str,
) -> String {
    let mut m = envelope(id, cmd, false);
    m.insert("error".into(), json!(error.code()));
    m.insert("message".into(), json!(message));
    Value::Object(m).to_string()
}

/// The fields of a `snapshot` reply announcing a JPEG of `bytes` bytes, sent next in
/// `chunks` binary messages.
pub fn snapshot_fields(bytes: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("image/jpeg"));
    m.insert("bytes".into(), json!(bytes));
    m.insert("chunks".into(), json!(bytes.div_ceil(CHUNK_BYTES)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parsed(reply: &str) -> Value {
        serde_json::from_str(reply).expect("replies are JSON")
    }

    fn reply_of(action: Action) -> Value {
        match action {
            Action::Reply(r) => parsed(&r),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn known_commands_run_with_their_id_and_ptz_is_reserved() {
        let mut c = Control::default();
        let now = Instant::now();
        assert_eq!(
            c.handle(now, br#"{"id":7,"cmd":"stats"}"#, true),
            Action::Run {
                id: Some(RequestId::Number(7)),
                cmd: Command::Stats
            }
        );
        assert_eq!(
            c.handle(now, br#"{"cmd":"keyframe","extra":[1,2]}"#, true),
            Action::Run {
                id: None,
                cmd: Command::Keyframe
            }
        );
        assert_eq!(
            c.handle(now, br#"{"id":"a","cmd":"snapshot"}"#, true),
            Action::Run {
                id: Some(RequestId::Text("a".into())),
                cmd: Command::Snapshot
            }
        );
        for (wire, cmd) in [("talk", Command::Talk), ("talk-end", Command::TalkEnd)] {
            let req = format!(r#"{{"id":9,"cmd":"{wire}"}}"#);
            assert_eq!(
                c.handle(now, req.as_bytes(), true),
                Action::Run {
                    id: Some(RequestId::Number(9)),
                    cmd
                }
            );
            assert_eq!(cmd.name(), wire);
        }
        let r = reply_of(c.handle(now, br#"{"id":"p","cmd":"ptz","pan":10}"#, true));
        assert_eq!(
            r,
            json!({"id":"p","cmd":"ptz","ok":false,"error":"unsupported",
                   "message":"this camera has no pan, tilt or zoom"})
        );
        let ok = parsed(&ok(
            Some(&RequestId::Number(2)),
            Command::Snapshot,
            snapshot_fields(40_000),
        ));
        assert_eq!(
            ok,
            json!({"id":2,"cmd":"snapshot","ok":true,"type":"image/jpeg","bytes":40000,"chunks":3})
        );
    }

    #[test]
    fn malformed_and_unknown_requests_are_refused_with_a_reason() {
        let mut c = Control::default();
        let t0 = Instant::now();
        let cases: [(&[u8], bool, &str); 6] = [
            (b"not json", true, "bad-request"),
            (br#"{"cmd":5}"#, true, "bad-request"),
            (br#"[1,2]"#, true, "bad-request"),
            (br#"{"cmd":"stats"}"#, false, "bad-request"),
            (br#"{"id":-1,"cmd":"stats"}"#, true, "bad-request"),
            (br#"{"id":3,"cmd":"reboot"}"#, true, "unknown-command"),
        ];
        for (i, (msg, text, code)) in cases.into_iter().enumerate() {
            // Spaced out so the budget is not what refuses them.
            let now = t0 + Duration::from_secs(i as u64);
            let r = reply_of(c.handle(now, msg, text));
            assert_eq!(r["ok"], json!(false), "{r}");
            assert_eq!(r["error"], json!(code), "{r}");
        }
        let long = format!(r#"{{"cmd":"stats","pad":"{}"}}"#, "x".repeat(2000));
        let r = reply_of(c.handle(t0 + Duration::from_secs(10), long.as_bytes(), true));
        assert_eq!(r["error"], json!("bad-request"));
        let long_id = format!(r#"{{"id":"{}","cmd":"stats"}}"#, "i".repeat(65));
        let r = reply_of(c.handle(t0 + Duration::from_secs(11), long_id.as_bytes(), true));
        assert_eq!(r["error"], json!("bad-request"));
        assert!(r.get("id").is_none(), "an over-long id is not echoed");
    }

    #[test]
    fn a_flood_gets_one_rate_limited_reply_then_silence_until_the_budget_refills() {
        let mut c = Control::default();
        let now = Instant::now();
        let stats = br#"{"cmd":"stats"}"#;
        for _ in 0..COMMAND_BURST {
            assert!(matches!(c.handle(now, stats, true), Action::Run { .. }));
        }
        let r = reply_of(c.handle(now, stats, true));
        assert_eq!(r["error"], json!("rate-limited"));
        for _ in 0..1000 {
            assert_eq!(c.handle(now, stats, true), Action::Ignore);
        }
        let later = now + Duration::from_secs(1);
        assert!(matches!(c.handle(later, stats, true), Action::Run { .. }));
    }

    #[test]
    fn snapshots_have_a_budget_of_their_own() {
        let mut c = Control::default();
        let now = Instant::now();
        let snap = br#"{"id":1,"cmd":"snapshot"}"#;
        assert!(matches!(c.handle(now, snap, true), Action::Run { .. }));
        assert!(matches!(c.handle(now, snap, true), Action::Run { .. }));
        let r = reply_of(c.handle(now, snap, true));
        assert_eq!(r["error"], json!("rate-limited"));
        assert_eq!(r["id"], json!(1));
        // Other commands still run.
        assert!(matches!(
            c.handle(now, br#"{"cmd":"stats"}"#, true),
            Action::Run { .. }
        ));
        assert!(matches!(
            c.handle(now + Duration::from_secs(1), snap, true),
            Action::Run { .. }
        ));
    }
}
