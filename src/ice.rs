//! ICE server policy, pure: the servers the camera itself uses, the `config` a viewer
//! gets in reply to `config-request` (contract, "Messages"), and TURN REST
//! credentials. Kept out of `peer` (the webrtc-rs adapter): nothing here touches a peer
//! connection.

use crate::config::{IceTransportPolicy, WebrtcConfig, is_udp_turn_url};
use crate::signaling::protocol::{IceServer, SessionId, ToViewer};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::time::Duration;

/// How a configured server authenticates.
#[derive(Debug, Clone)]
enum Credential {
    /// STUN, or a TURN server without credentials (rejected by config validation).
    None,
    /// Long-term credential (RFC 8489 §9.2) as configured.
    Static {
        username: String,
        credential: String,
    },
    /// TURN REST shared secret: credentials are minted per use.
    Rest { secret: String },
}

#[derive(Debug, Clone)]
struct Server {
    urls: Vec<String>,
    credential: Credential,
    shared: bool,
}

impl Server {
    fn is_turn(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("turn"))
    }

    /// This server for `user`, with credentials valid until `expires_unix`.
    fn resolve(&self, user: &str, expires_unix: u64) -> IceServer {
        let (username, credential) = match &self.credential {
            Credential::None => (None, None),
            Credential::Static {
                username,
                credential,
            } => (Some(username.clone()), Some(credential.clone())),
            Credential::Rest { secret } => {
                let (u, c) = turn_rest_credential(secret.as_bytes(), user, expires_unix);
                (Some(u), Some(c))
            }
        };
        IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }
}

/// ICE servers and policies from `[webrtc]`: what the camera's own peer connections use
/// and what the `config` message hands each viewer (contract, "Messages").
///
/// Secrets never leave this type: viewers get STUN servers, TURN servers with minted
/// TURN REST credentials, and static TURN passwords only where the operator set
/// `share_with_viewers = true`.
#[derive(Debug, Clone)]
pub struct IcePolicy {
    servers: Vec<Server>,
    /// The camera's `iceTransportPolicy`.
    pub transport_policy: IceTransportPolicy,
    /// The `iceTransportPolicy` handed to viewers in `config`.
    pub viewer_transport_policy: IceTransportPolicy,
    /// Lifetime of minted credentials.
    pub ttl: Duration,
    /// A live session's credentials are refreshed this long before they expire.
    pub refresh_before: Duration,
}

impl Default for IcePolicy {
    fn default() -> Self {
        Self::from_config(&WebrtcConfig::default())
    }
}

impl IcePolicy {
    /// From the `[webrtc]` section (already validated).
    pub fn from_config(cfg: &WebrtcConfig) -> Self {
        let servers = cfg
            .ice_servers
            .iter()
            .map(|s| Server {
                urls: s.urls.clone(),
                credential: match (&s.secret, &s.username, &s.credential) {
                    (Some(secret), _, _) => Credential::Rest {
                        secret: secret.clone(),
                    },
                    (None, Some(u), Some(c)) => Credential::Static {
                        username: u.clone(),
                        credential: c.clone(),
                    },
                    _ => Credential::None,
                },
                shared: s.shared_with_viewers(),
            })
            .collect();
        Self {
            servers,
            transport_policy: cfg.ice_transport_policy,
            viewer_transport_policy: cfg.viewer_ice_transport_policy,
            ttl: Duration::from_secs(u64::from(cfg.turn_credential_ttl_s)),
            refresh_before: Duration::from_secs(u64::from(cfg.turn_refresh_before_s)),
        }
    }

    /// Whether `config` hands viewers a TURN server (advertised in the status as `turn`).
    pub fn has_turn(&self) -> bool {
        self.servers.iter().any(|s| s.shared && s.is_turn())
    }

    /// Whether the camera itself has a TURN server to gather relay candidates from:
    /// a `turn:` URL over UDP. webrtc-rs 0.21 allocates over UDP only and skips
    /// `?transport=tcp` and `turns:` URLs (those still serve viewers).
    pub fn camera_has_turn(&self) -> bool {
        self.servers
            .iter()
            .flat_map(|s| &s.urls)
            .any(|u| is_udp_turn_url(u))
    }

    /// Whether the camera's own credentials are minted (a TURN REST secret is set), so
    /// they need renewing on long sessions.
    pub fn camera_mints(&self) -> bool {
        self.servers
            .iter()
            .any(|s| matches!(s.credential, Credential::Rest { .. }))
    }

    /// When a live session's minted credentials need a fresh `config`, counted from the
    /// `config` that handed them out: `ttl - refresh_before`, or `ttl / 2` when
    /// `refresh_before` is not shorter than the TTL. `None` when viewers get no minted
    /// credentials (nothing expires).
    pub fn refresh_after(&self) -> Option<Duration> {
        let minted = self
            .servers
            .iter()
            .any(|s| s.shared && matches!(s.credential, Credential::Rest { .. }));
        minted.then(|| {
            self.ttl
                .checked_sub(self.refresh_before)
                .filter(|d| !d.is_zero())
                .unwrap_or(self.ttl / 2)
        })
    }

    /// The servers for the camera's own peer connection of `session`, with TURN REST
    /// credentials minted at `now_unix` (s) for the user `<camera>-<session>`.
    pub fn camera_servers(
        &self,
        camera: &str,
        session: &SessionId,
        now_unix: u64,
    ) -> Vec<IceServer> {
        let user = format!("{camera}-{session}");
        let expires = now_unix + self.ttl.as_secs();
        self.servers
            .iter()
            .map(|s| s.resolve(&user, expires))
            .collect()
    }

    /// The `config` message for `session` at wall-clock `now_unix` (s): shared servers,
    /// TURN REST credentials `<expiry>:<session>` minted from the secret, and `expires`
    /// when any were minted (contract, "Messages": `config`).
    pub fn viewer_config(&self, session: &SessionId, now_unix: u64) -> ToViewer {
        let expires_at = now_unix + self.ttl.as_secs();
        let shared: Vec<&Server> = self.servers.iter().filter(|s| s.shared).collect();
        let minted = shared
            .iter()
            .any(|s| matches!(s.credential, Credential::Rest { .. }));
        ToViewer::Config {
            ice_servers: shared
                .iter()
                .map(|s| s.resolve(session.as_str(), expires_at))
                .collect(),
            ice_transport_policy: self.viewer_transport_policy.as_str().to_owned(),
            expires: minted.then_some(expires_at),
        }
    }
}

/// Wall-clock Unix time, s: the clock TURN REST expiry times are counted in.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A TURN REST credential (draft-uberti-behave-turn-rest-00, coturn `use-auth-secret`):
/// username `<expiry-unix-time>:<user>`, password `base64(HMAC-SHA1(secret, username))`.
/// Returns `(username, password)`.
pub fn turn_rest_credential(secret: &[u8], user: &str, expires_unix: u64) -> (String, String) {
    let username = format!("{expires_unix}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credential_matches_coturn_format() {
        // Reference: python3 -c 'import hmac,hashlib,base64;
        //   print(base64.b64encode(hmac.new(b"secret", b"1763700000:s1", hashlib.sha1).digest()))'
        let (user, pass) = turn_rest_credential(b"secret", "s1", 1_763_700_000);
        assert_eq!(user, "1763700000:s1");
        assert_eq!(pass, "67w3Qd5c2Qo+RzWbIg7gONKM77Y=");
    }

    #[test]
    fn default_policy_has_no_servers() {
        let p = IcePolicy::from_config(&WebrtcConfig::default());
        assert!(p.servers.is_empty());
        assert!(!p.has_turn());
        assert!(p.refresh_after().is_none());
    }

    fn policy(toml: &str) -> IcePolicy {
        let c = crate::config::Config::parse(toml, "t").unwrap();
        IcePolicy::from_config(&c.webrtc)
    }

    fn sid(s: &str) -> SessionId {
        crate::signaling::protocol::Id::parse(s).unwrap()
    }

    #[test]
    fn viewers_get_minted_credentials_never_the_secret() {
        let p = policy(
            r#"
            [[webrtc.ice_servers]]
            urls = ["stun:10.0.0.1:3478"]
            [[webrtc.ice_servers]]
            urls = ["turn:10.0.0.1:3478", "turns:turn.example.net:5349"]
            secret = "secret"
            [[webrtc.ice_servers]]
            urls = ["turn:10.0.0.2:3478"]
            username = "cam"
            credential = "long-term"
            "#,
        );
        assert!(p.has_turn());
        let ToViewer::Config {
            ice_servers,
            ice_transport_policy,
            expires,
        } = p.viewer_config(&sid("s1"), 1_763_696_400)
        else {
            panic!("not a config");
        };
        assert_eq!(ice_transport_policy, "all");
        // The default TTL, 15 min.
        assert_eq!(expires, Some(1_763_697_300));
        // STUN and the REST server; the static long-term password stays on the camera.
        assert_eq!(ice_servers.len(), 2);
        assert_eq!(ice_servers[0].username, None);
        assert_eq!(ice_servers[1].username.as_deref(), Some("1763697300:s1"));
        // base64(HMAC-SHA1("secret", "1763697300:s1")), computed with Python's hmac.
        assert_eq!(
            ice_servers[1].credential.as_deref(),
            Some("XeYclNRH1N5lzL0BehL7aTH26PA=")
        );
        let json = serde_json::to_string(&p.viewer_config(&sid("s1"), 0)).unwrap();
        assert!(
            !json.contains("\"secret\"") && !json.contains("long-term"),
            "{json}"
        );
        // The camera uses all three, with its own minted user.
        let own = p.camera_servers("porch", &sid("s1"), 1_763_696_400);
        assert_eq!(own.len(), 3);
        assert_eq!(own[1].username.as_deref(), Some("1763697300:porch-s1"));
        assert_eq!(own[2].credential.as_deref(), Some("long-term"));
        // 15 min TTL, refreshed 5 min before expiry.
        assert_eq!(p.refresh_after(), Some(Duration::from_secs(600)));
    }

    #[test]
    fn static_credentials_are_shared_only_when_asked_and_short_ttls_refresh_at_half() {
        let p = policy(
            r#"
            [webrtc]
            turn_credential_ttl_s = 240
            viewer_ice_transport_policy = "relay"
            [[webrtc.ice_servers]]
            urls = ["turn:10.0.0.2:3478?transport=tcp"]
            username = "viewer"
            credential = "pw"
            share_with_viewers = true
            "#,
        );
        assert!(p.has_turn());
        // Nothing minted: nothing to refresh, no `expires`.
        assert_eq!(p.refresh_after(), None);
        let ToViewer::Config {
            ice_servers,
            ice_transport_policy,
            expires,
        } = p.viewer_config(&sid("s1"), 100)
        else {
            panic!("not a config");
        };
        assert_eq!(ice_transport_policy, "relay");
        assert_eq!(expires, None);
        assert_eq!(ice_servers[0].credential.as_deref(), Some("pw"));
        let p = policy(
            r#"
            [webrtc]
            turn_credential_ttl_s = 240
            [[webrtc.ice_servers]]
            urls = ["turn:10.0.0.2:3478"]
            secret = "x"
            "#,
        );
        assert_eq!(p.refresh_after(), Some(Duration::from_secs(120)));
    }
}
