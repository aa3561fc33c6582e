//! ICE server policy: the servers the camera itself uses, and the `config` a viewer
//! gets in reply to `config-request` (contract, "Messages").

use crate::config::WebrtcConfig;
use crate::signaling::protocol::{IceServer, SessionId, ToViewer};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// ICE servers and policy, from `[webrtc]`.
#[derive(Debug, Clone, Default)]
pub struct IcePolicy {
    /// Servers with their static credentials.
    pub servers: Vec<IceServer>,
    /// `"all"` or `"relay"`.
    pub transport_policy: String,
}

impl IcePolicy {
    /// From the `[webrtc]` section.
    pub fn from_config(cfg: &WebrtcConfig) -> Self {
        Self {
            servers: cfg
                .ice_servers
                .iter()
                .map(|s| IceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
            transport_policy: cfg.ice_transport_policy.clone(),
        }
    }

    /// Whether any TURN server is configured (advertised in the status as `turn`).
    pub fn has_turn(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.urls.iter().any(|u| u.starts_with("turn")))
    }

    /// The `config` message for `session`: the configured servers. Long-term TURN
    /// passwords are handed to viewers only because the operator configured them here;
    /// TURN REST minting is [`turn_rest_credential`].
    pub fn viewer_config(&self, _session: &SessionId) -> ToViewer {
        ToViewer::Config {
            ice_servers: self.servers.clone(),
            ice_transport_policy: self.transport_policy.clone(),
            expires: None,
        }
    }
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
    }
}
