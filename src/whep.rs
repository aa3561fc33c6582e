//! WHEP, the WebRTC-HTTP egress protocol (draft-ietf-wish-whep; its HTTP usage is
//! RFC 9725's for WHIP): a second signaling front-end beside MQTT. What it needs that
//! is pure lives here: the request/reply values the HTTP server and the camera loop
//! exchange, the `application/trickle-ice-sdpfrag` parser (RFC 8840 §9) for `PATCH`,
//! and the `Link` headers that hand out ICE servers (RFC 9725 §4.6).
//!
//! A WHEP session is an ordinary session of the signaling machine under a random
//! `whep-…` id: the same viewer limit, offer budget, keyframe on join, timeouts and hub
//! as an MQTT viewer's. Only the transport of its SDP differs: the answer carries all
//! of the camera's candidates (WHEP has no channel for the camera to trickle on).

use crate::signaling::protocol::{CandidateInit, IceServer, SessionId};
use tokio::sync::oneshot;

/// Longest SDP offer or sdpfrag body accepted, bytes (the MQTT contract's 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most candidates one `PATCH` may carry.
pub const MAX_PATCH_CANDIDATES: usize = 50;

/// Why a WHEP request failed; the HTTP server maps each to its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhepError {
    /// The viewer limit, the offer budget, or shutdown: `503`.
    #[error("busy: {0}")]
    Busy(String),
    /// The offer cannot be answered (no H.264, unparseable SDP): `400`.
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// No such session (ended, or never existed): `404`.
    #[error("no such WHEP session")]
    NotFound,
    /// A `PATCH` edgecam does not carry out, e.g. an ICE restart: `422` (RFC 9725
    /// §4.3.2: trickle ICE is supported, ICE restarts are not).
    #[error("{0}")]
    Unprocessable(String),
    /// The body is not a trickle-ice-sdpfrag: `400`.
    #[error("bad sdpfrag: {0}")]
    BadFragment(String),
    /// edgecam failed or is shutting down: `500`.
    #[error("internal: {0}")]
    Internal(String),
}

/// A created session: what `201 Created` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The session's id; its resource is `/whep/<id>`.
    pub id: SessionId,
    /// The SDP answer, with the camera's candidates.
    pub answer: String,
    /// ICE servers for the caller (TURN credentials minted for this session).
    pub ice_servers: Vec<IceServer>,
}

/// What the HTTP server asks the camera loop.
#[derive(Debug)]
pub enum WhepRequest {
    /// `POST /whep`: a new session for this SDP offer.
    Offer {
        /// The SDP offer.
        sdp: String,
        /// Gets the answer or the refusal.
        reply: oneshot::Sender<Result<Created, WhepError>>,
    },
    /// `PATCH /whep/<id>`: trickled candidates of the caller.
    Patch {
        /// The session.
        id: SessionId,
        /// The parsed body.
        fragment: SdpFrag,
        /// `Ok` once handed to the session.
        reply: oneshot::Sender<Result<(), WhepError>>,
    },
    /// `DELETE /whep/<id>`: the caller leaves.
    Delete {
        /// The session.
        id: SessionId,
        /// `Ok` when the session existed.
        reply: oneshot::Sender<Result<(), WhepError>>,
    },
}

/// A parsed `application/trickle-ice-sdpfrag` body (RFC 8840 §9.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`, if present (a new one means an ICE restart).
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub pwd: Option<String>,
    /// `a=candidate` lines with the `m=` line (index and `a=mid`) they follow.
    pub candidates: Vec<CandidateInit>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Parses a trickle-ice-sdpfrag body: SDP lines (`\r\n` or `\n`), of which `a=ice-ufrag`,
/// `a=ice-pwd`, `m=`, `a=mid`, `a=candidate` and `a=end-of-candidates` matter; other
/// lines are skipped as RFC 8840 §9 allows.
///
/// # Errors
/// [`WhepError::BadFragment`] for a body over [`MAX_BODY_BYTES`], a line that is not
/// `<letter>=<value>`, more than [`MAX_PATCH_CANDIDATES`] candidates, or a field
/// longer than 1024 characters.
pub fn parse_sdpfrag(body: &str) -> Result<SdpFrag, WhepError> {
    let bad = |why: &str| WhepError::BadFragment(why.to_owned());
    if body.len() > MAX_BODY_BYTES {
        return Err(bad("body over 64 KiB"));
    }
    let mut frag = SdpFrag::default();
    let mut mline: Option<u16> = None;
    let mut mid: Option<String> = None;
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(bad("a line is not <type>=<value>"));
        };
        if kind.len() != 1 || value.len() > 1024 {
            return Err(bad(
                "a line is not <type>=<value> of at most 1024 characters",
            ));
        }
        match kind {
            "m" => {
                mline = Some(mline.map_or(0, |i| i.saturating_add(1)));
                mid = None;
            }
            "a" => {
                let (name, attr) = value.split_once(':').unwrap_or((value, ""));
                match name {
                    "ice-ufrag" => frag.ufrag = Some(attr.to_owned()),
                    "ice-pwd" => frag.pwd = Some(attr.to_owned()),
                    "mid" => mid = Some(attr.to_owned()),
                    "end-of-candidates" => frag.end_of_candidates = true,
                    "candidate" => {
                        if frag.candidates.len() >= MAX_PATCH_CANDIDATES {
                            return Err(bad("more than 50 candidates"));
                        }
                        frag.candidates.push(CandidateInit {
                            candidate: value.to_owned(),
                            sdp_mid: mid.clone(),
                            sdp_mline_index: mline.or(Some(0)),
                            username_fragment: frag.ufrag.clone(),
                        });
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(frag)
}

/// The `Link` header values that hand `servers` to a WHEP caller (RFC 9725 §4.6):
/// one per URL, `<url>; rel="ice-server"`, with `username`, `credential` and
/// `credential-type="password"` for TURN. Quotes and backslashes in credentials are
/// escaped as RFC 8288 quoted strings want.
pub fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(cred)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(user),
                    quote(cred)
                ));
            }
            links.push(link);
        }
    }
    links
}

/// A fresh session id `whep-<22 base64url characters>` (128 random bits): the
/// resource URL is unguessable, on top of the bearer token every request needs.
pub fn new_session_id() -> SessionId {
    use base64::Engine as _;
    let bytes: [u8; 16] = rand::random();
    let id = format!(
        "whep-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    SessionId::parse(&id).expect("whep- and base64url are id characters")
}

/// Whether `id` names a WHEP session (MQTT viewers cannot pick such ids: see
/// `app::whep`).
pub fn is_whep_id(id: &SessionId) -> bool {
    id.as_str().starts_with("whep-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_yields_its_candidates_with_their_m_line() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                    a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n\
                    m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\n\
                    a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active\r\n\
                    a=end-of-candidates\r\n";
        let f = parse_sdpfrag(body).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 3);
        assert!(
            f.candidates[0]
                .candidate
                .starts_with("candidate:1387637174 1 udp")
        );
        assert_eq!(
            (
                f.candidates[1].sdp_mid.as_deref(),
                f.candidates[1].sdp_mline_index
            ),
            (Some("0"), Some(0))
        );
        assert_eq!(
            (
                f.candidates[2].sdp_mid.as_deref(),
                f.candidates[2].sdp_mline_index
            ),
            (Some("1"), Some(1))
        );
        assert_eq!(f.candidates[2].username_fragment.as_deref(), Some("EsAw"));
        assert!(f.end_of_candidates);
    }

    #[test]
    fn malformed_fragments_are_refused() {
        for body in [
            "not sdp at all",
            "ab=c",
            &format!("a={}", "x".repeat(2000)),
            &"a=candidate:1 1 udp 1 192.0.2.1 1 typ host\n".repeat(51),
        ] {
            assert!(
                matches!(parse_sdpfrag(body), Err(WhepError::BadFragment(_))),
                "{body:.40}"
            );
        }
        assert_eq!(parse_sdpfrag("").unwrap(), SdpFrag::default());
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_server_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:turn.example.net?transport=udp".into(),
                    "turns:turn.example.net:5349?transport=tcp".into(),
                ],
                username: Some("1700000000:whep-x".into()),
                credential: Some("a\"b".into()),
            },
        ]);
        assert_eq!(
            links,
            [
                "<stun:stun.example.net>; rel=\"ice-server\"",
                "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"1700000000:whep-x\"; credential=\"a\\\"b\"; credential-type=\"password\"",
                "<turns:turn.example.net:5349?transport=tcp>; rel=\"ice-server\"; username=\"1700000000:whep-x\"; credential=\"a\\\"b\"; credential-type=\"password\"",
            ]
        );
    }

    #[test]
    fn session_ids_are_whep_ids_and_differ() {
        let (a, b) = (new_session_id(), new_session_id());
        assert!(is_whep_id(&a) && is_whep_id(&b));
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 27);
    }
}
