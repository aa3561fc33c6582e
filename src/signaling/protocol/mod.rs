//! Wire types of the edgecam MQTT signaling contract, protocol 1
//! (`shared/design/signaling-v1.md`, user copy in `docs/signaling.md`).
//!
//! Pure: parsing and serialising only, no IO. Field names follow the browser's
//! `RTCSessionDescriptionInit` / `RTCIceCandidateInit` so a page can pass them through.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Protocol number carried in the retained status (`"protocol":1`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest accepted message, in bytes (contract: "at most 64 KiB").
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A camera id or a viewer-chosen session id: `[A-Za-z0-9_-]{1,64}` (contract, "Topics").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// Validates `s` against `[A-Za-z0-9_-]{1,64}`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidId`] when `s` is empty, longer than 64 bytes or holds
    /// any other character.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ProtocolError::InvalidId(s.chars().take(80).collect()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Viewer-chosen session id (see [`Id`]).
pub type SessionId = Id;

/// One ICE candidate as the browser's `RTCIceCandidateInit` (RFC 8839 §5.1 candidate line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateInit {
    /// `candidate:…` attribute line (without `a=`).
    pub candidate: String,
    /// `a=mid` of the m-line the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Zero-based m-line index.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    /// ICE ufrag the candidate belongs to (tells candidates of an old ICE generation apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A message a viewer sends on `{prefix}/{camera}/session/{session}/to-camera`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToCamera {
    /// `{"type":"config-request"}`: asks for the ICE servers this session should use.
    ConfigRequest,
    /// `{"type":"offer","sdp":…}`: starts a session, or renegotiates a live one.
    Offer {
        /// The SDP offer (RFC 8866 text).
        sdp: String,
    },
    /// `{"type":"candidate","candidate":{…}|null}`: a trickled ICE candidate, `None` = end of candidates.
    Candidate(Option<CandidateInit>),
    /// `{"type":"bye"}`: the viewer leaves.
    Bye,
}

/// Error codes of the contract's `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not JSON, no or unknown `type`, missing or mistyped fields, payload over 64 KiB.
    BadRequest,
    /// SDP rejected: unparseable, no recvonly/sendrecv video m-line, no usable H.264.
    BadOffer,
    /// Viewer limit reached, offer rate limit hit, or the camera is shutting down.
    Busy,
    /// The viewer is not allowed to watch.
    Unauthorized,
    /// A candidate for a session that does not exist.
    UnknownSession,
    /// The camera failed for a reason of its own.
    Internal,
}

/// Why the camera ended a session (`bye.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ByeReason {
    /// The camera is stopping.
    Shutdown,
    /// ICE did not reach `connected` within 30 s of an offer.
    Timeout,
    /// The peer connection failed.
    Failed,
    /// An operator (or a policy) removed the viewer.
    Kicked,
}

/// One ICE server as the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs (RFC 7064 / RFC 7065).
    pub urls: Vec<String>,
    /// TURN username, absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password, absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message the camera sends on `…/to-viewer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToViewer {
    /// Reply to `config-request`.
    #[serde(rename_all = "camelCase")]
    Config {
        /// ICE servers for the viewer's `RTCPeerConnection`.
        ice_servers: Vec<IceServer>,
        /// `"all"` or `"relay"`.
        ice_transport_policy: String,
        /// Unix time (s) at which short-lived TURN credentials expire, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
    /// The SDP answer.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// A trickled camera candidate, `None` (JSON `null`) = end of candidates.
    Candidate {
        /// The candidate or `null`.
        candidate: Option<CandidateInit>,
    },
    /// A request was refused; see [`ErrorCode`].
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// The camera ended the session.
    Bye {
        /// Why.
        reason: ByeReason,
    },
}

impl ToViewer {
    /// Shorthand for an `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// Serialises to the JSON payload published on MQTT.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).expect("ToViewer serialises")
    }
}

/// Why a `to-camera` payload was refused; every variant maps to `bad-request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Payload over [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds the 65536-byte limit")]
    TooLarge(usize),
    /// Not UTF-8 JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("message is not a JSON object")]
    NotObject,
    /// No `type` field, or not a string.
    #[error("missing or non-string \"type\"")]
    NoType,
    /// A `type` this protocol does not define.
    #[error("unknown type {0:?}")]
    UnknownType(String),
    /// A required field is missing or has the wrong JSON type.
    #[error("field {field:?}: {problem}")]
    BadField {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An id does not match `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid id {0:?}")]
    InvalidId(String),
}

/// Parses one `to-camera` payload.
///
/// Unknown extra fields are ignored (forward compatibility); the `type` decides which
/// fields are required.
///
/// # Errors
/// A [`ProtocolError`] naming what is wrong; the contract answers all of them with
/// `error` code `bad-request`.
pub fn parse_to_camera(payload: &[u8]) -> Result<ToCamera, ProtocolError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ProtocolError::TooLarge(payload.len()));
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::NotObject);
    };
    let Some(Value::String(kind)) = obj.get("type") else {
        return Err(ProtocolError::NoType);
    };
    match kind.as_str() {
        "config-request" => Ok(ToCamera::ConfigRequest),
        "bye" => Ok(ToCamera::Bye),
        "offer" => Ok(ToCamera::Offer {
            sdp: string_field(&obj, "sdp")?,
        }),
        "candidate" => match obj.get("candidate") {
            None => Err(ProtocolError::BadField {
                field: "candidate",
                problem: "missing (use null for end of candidates)".into(),
            }),
            Some(Value::Null) => Ok(ToCamera::Candidate(None)),
            Some(v @ Value::Object(_)) => {
                let c: CandidateInit =
                    serde_json::from_value(v.clone()).map_err(|e| ProtocolError::BadField {
                        field: "candidate",
                        problem: e.to_string(),
                    })?;
                // Browsers signal end-of-candidates for an m-line as an empty candidate string.
                if c.candidate.trim().is_empty() {
                    Ok(ToCamera::Candidate(None))
                } else {
                    Ok(ToCamera::Candidate(Some(c)))
                }
            }
            Some(_) => Err(ProtocolError::BadField {
                field: "candidate",
                problem: "must be an object or null".into(),
            }),
        },
        other => Err(ProtocolError::UnknownType(other.chars().take(64).collect())),
    }
}

fn string_field(obj: &Map<String, Value>, field: &'static str) -> Result<String, ProtocolError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ProtocolError::BadField {
            field,
            problem: "must be a string".into(),
        }),
        None => Err(ProtocolError::BadField {
            field,
            problem: "missing".into(),
        }),
    }
}

/// MQTT topic names of one camera (contract, "Topics").
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
    camera: Id,
}

impl Topics {
    /// Topics for `camera` under `prefix` (default prefix `edgecam`).
    pub fn new(prefix: &str, camera: Id) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
            camera,
        }
    }

    /// The camera id.
    pub fn camera(&self) -> &Id {
        &self.camera
    }

    /// `{prefix}/{camera}/status` (retained).
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.camera)
    }

    /// `{prefix}/{camera}/session/+/to-camera`, the camera's one subscription.
    pub fn to_camera_filter(&self) -> String {
        format!("{}/{}/session/+/to-camera", self.prefix, self.camera)
    }

    /// `{prefix}/{camera}/session/{session}/to-viewer`.
    pub fn to_viewer(&self, session: &SessionId) -> String {
        format!(
            "{}/{}/session/{}/to-viewer",
            self.prefix, self.camera, session
        )
    }

    /// `{prefix}/{camera}/session/{session}/to-camera`.
    pub fn to_camera(&self, session: &SessionId) -> String {
        format!(
            "{}/{}/session/{}/to-camera",
            self.prefix, self.camera, session
        )
    }

    /// `{prefix}/{camera}/snapshot`: JPEGs of the current picture (edgecam extension,
    /// Home Assistant's camera entity; `docs/signaling.md`, "Extension: MQTT topics").
    pub fn snapshot(&self) -> String {
        format!("{}/{}/snapshot", self.prefix, self.camera)
    }

    /// `{prefix}/{camera}/snapshot/request`: any message asks for a fresh
    /// [`Topics::snapshot`] (edgecam extension).
    pub fn snapshot_request(&self) -> String {
        format!("{}/{}/snapshot/request", self.prefix, self.camera)
    }

    /// `{prefix}/{camera}/telemetry`: periodic JSON figures (viewers, bitrate) for
    /// Home Assistant's sensors (edgecam extension).
    pub fn telemetry(&self) -> String {
        format!("{}/{}/telemetry", self.prefix, self.camera)
    }

    /// Extracts the session id from a `to-camera` topic of this camera.
    ///
    /// Returns `None` for a topic that is not this camera's `to-camera` topic, and
    /// `Some(Err(_))` for one whose `{session}` segment is not a valid id (the contract
    /// drops those with a log line and no reply).
    pub fn parse_to_camera(&self, topic: &str) -> Option<Result<SessionId, ProtocolError>> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_prefix(self.camera.as_str())?
            .strip_prefix("/session/")?;
        let session = rest.strip_suffix("/to-camera")?;
        Some(Id::parse(session))
    }
}

/// `video` object of the retained status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Always `"H264"`.
    pub codec: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

/// `audio` object of the retained status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Always `"opus"`.
    pub codec: String,
    /// Hz (48000 for Opus).
    pub rate: u32,
    /// 1 or 2.
    pub channels: u32,
}

/// The retained `{prefix}/{camera}/status` payload (contract, "Status payload").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always 1.
    pub protocol: u32,
    /// `"online"` or `"offline"`.
    pub state: String,
    /// Camera id.
    pub camera: String,
    /// Display name (online only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// edgecam version (online only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Video stream (online only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoInfo>,
    /// Audio stream; serialised as `null` without a microphone (online only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with_null"
    )]
    pub audio: Option<Option<AudioInfo>>,
    /// Open sessions (online only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u32>,
    /// Viewer cap (online only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<u32>,
    /// Whether `config-request` hands out TURN servers; an edgecam extension viewers may
    /// ignore (see `docs/signaling.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<bool>,
    /// Authentication schemes the camera requires, `["signed-v1"]` in invite mode
    /// (`shared/design/access-v1.md`, "The status"); absent in open mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Vec<String>>,
    /// edgecam extensions a viewer may use beyond protocol 1 (`docs/signaling.md`,
    /// "Extensions"), e.g. `["control-channel-v1"]`; viewers may ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
}

mod serde_with_null {
    use super::AudioInfo;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(
        v: &Option<Option<AudioInfo>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<AudioInfo>>, D::Error> {
        Ok(Some(Option::<AudioInfo>::deserialize(d)?))
    }
}

impl Status {
    /// The payload that marks `camera` offline (also the MQTT Last Will).
    pub fn offline(camera: &Id) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            state: "offline".into(),
            camera: camera.to_string(),
            name: None,
            version: None,
            video: None,
            audio: None,
            viewers: None,
            max_viewers: None,
            turn: None,
            auth: None,
            extensions: None,
        }
    }

    /// Serialises to JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Status serialises")
    }
}

#[cfg(test)]
mod tests;
