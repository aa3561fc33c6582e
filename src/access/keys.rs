//! The keys of invite mode (`shared/design/access-v1.md`, "Keys"): the camera's access
//! secret `S`, a viewer's key `K` derived from it, and the bearer token derived from
//! `K`. Pure: HMAC-SHA256 through `ring`, no IO.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use std::fmt;

/// Bytes of the camera access secret `S`.
pub const SECRET_BYTES: usize = 32;

/// The camera access secret `S` (32 bytes). Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_BYTES]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret from its 32 bytes.
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (to store in the state directory).
    pub fn as_bytes(&self) -> &[u8; SECRET_BYTES] {
        &self.0
    }

    /// 32 bytes from the operating system's CSPRNG.
    ///
    /// # Errors
    /// When the system random source fails (`ring::rand::SystemRandom`).
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; SECRET_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
        Ok(Self(bytes))
    }
}

/// A viewer key `K`; its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ViewerKey([u8; 32]);

impl fmt::Debug for ViewerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ViewerKey(…)")
    }
}

/// Why a viewer name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("viewer name must match [A-Za-z0-9_.-]{{1,64}}")]
pub struct BadName;

/// Checks a viewer name against `[A-Za-z0-9_.-]{1,64}` (access-v1, "Keys").
///
/// # Errors
/// [`BadName`] otherwise.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(BadName) }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

impl ViewerKey {
    /// `K = HMAC-SHA256(S, "edgecam-viewer-key/1\n" + camera_id + "\n" + name + "\n" + exp)`,
    /// `exp` in unix seconds, decimal.
    pub fn derive(secret: &Secret, camera_id: &str, name: &str, exp: u64) -> Self {
        let exp = exp.to_string();
        let tag = mac(
            &secret.0,
            &[
                b"edgecam-viewer-key/1\n",
                camera_id.as_bytes(),
                b"\n",
                name.as_bytes(),
                b"\n",
                exp.as_bytes(),
            ],
        );
        let mut k = [0u8; 32];
        k.copy_from_slice(tag.as_ref());
        Self(k)
    }

    /// A key from its base64url text (as in an invitation link).
    ///
    /// # Errors
    /// When the text is not unpadded base64url of 32 bytes.
    pub fn from_base64url(text: &str) -> Result<Self, base64::DecodeError> {
        let bytes = URL_SAFE_NO_PAD.decode(text)?;
        let k: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| base64::DecodeError::InvalidLength(v.len()))?;
        Ok(Self(k))
    }

    /// The key as unpadded base64url (the `key=` of an invitation link).
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The bearer token `<name>.<exp>.<base64url(HMAC-SHA256(K, "edgecam-token/1\n" +
    /// camera_id + "\n" + name + "\n" + exp))>`: the MQTT password and HTTP bearer.
    pub fn token(&self, camera_id: &str, name: &str, exp: u64) -> String {
        let tag = mac(&self.0, &[token_data(camera_id, name, exp).as_bytes()]);
        format!("{name}.{exp}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `token` is this key's bearer token for `camera_id` (see
    /// [`ViewerKey::token`]); the MAC part is compared in constant time by `ring`.
    pub fn verify_token(&self, camera_id: &str, name: &str, exp: u64, token: &str) -> bool {
        token
            .strip_prefix(&format!("{name}.{exp}."))
            .is_some_and(|mac_b64| {
                self.verify(token_data(camera_id, name, exp).as_bytes(), mac_b64)
            })
    }

    /// The MAC of one signed message (access-v1, "Signed messages"):
    /// `HMAC-SHA256(K, "edgecam-msg/1\n" + dir + "\n" + camera_id + "\n" + session_id +
    /// "\n" + msg)`, as unpadded base64url.
    pub fn message_mac(
        &self,
        dir: Direction,
        camera_id: &str,
        session_id: &str,
        msg: &str,
    ) -> String {
        let tag = mac(&self.0, &[&message_data(dir, camera_id, session_id, msg)]);
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `mac_b64` is the MAC of `msg` (compared in constant time by `ring`).
    pub fn verify_message(
        &self,
        dir: Direction,
        camera_id: &str,
        session_id: &str,
        msg: &str,
        mac_b64: &str,
    ) -> bool {
        self.verify(&message_data(dir, camera_id, session_id, msg), mac_b64)
    }

    /// Whether `mac_b64` is this key's HMAC of `data` (`ring::hmac::verify`).
    fn verify(&self, data: &[u8], mac_b64: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(mac_b64) else {
            return false;
        };
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), data, &given).is_ok()
    }
}

/// What a token's MAC covers: `"edgecam-token/1\n" + camera_id + "\n" + name + "\n" + exp`.
fn token_data(camera_id: &str, name: &str, exp: u64) -> String {
    format!("edgecam-token/1\n{camera_id}\n{name}\n{exp}")
}

/// What a message's MAC covers: `"edgecam-msg/1\n" + dir + "\n" + camera_id + "\n" +
/// session_id + "\n" + msg`.
fn message_data(dir: Direction, camera_id: &str, session_id: &str, msg: &str) -> Vec<u8> {
    let head = format!(
        "edgecam-msg/1\n{}\n{camera_id}\n{session_id}\n",
        dir.as_str()
    );
    let mut data = Vec::with_capacity(head.len() + msg.len());
    data.extend_from_slice(head.as_bytes());
    data.extend_from_slice(msg.as_bytes());
    data
}

/// Which way a signed message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Viewer → camera (`v2c`).
    ViewerToCamera,
    /// Camera → viewer (`c2v`).
    CameraToViewer,
}

impl Direction {
    /// `v2c` or `c2v`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ViewerToCamera => "v2c",
            Self::CameraToViewer => "c2v",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_secret() -> Secret {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        Secret::from_bytes(s)
    }

    /// The test vectors of access-v1.md, "Test vectors".
    #[test]
    fn access_v1_test_vectors() {
        let k = ViewerKey::derive(&vector_secret(), "porch", "alice", 1_798_675_200);
        assert_eq!(
            k.to_base64url(),
            "kArD0VbYcjGuNOKIEEiu53VaI7TxOeLVwRtkePrCjuo"
        );
        assert_eq!(
            k.token("porch", "alice", 1_798_675_200),
            "alice.1798675200.a_15kIIYiyNfYHE0gP9YoEMqdyiY3CquSX8oW0jZ9Z4"
        );
        let msg = r#"{"type":"offer","sdp":"v=0\r\n","ts":1798600000000}"#;
        assert_eq!(msg.len(), 51);
        let mac = k.message_mac(Direction::ViewerToCamera, "porch", "v-abc123", msg);
        assert_eq!(mac, "BRbrIGucUrdUqtpLDl7e9z7EK-K-kPGmL2f0uCELFs4");
        assert!(k.verify_message(Direction::ViewerToCamera, "porch", "v-abc123", msg, &mac));
        // Any other direction, camera, session or byte fails.
        assert!(!k.verify_message(Direction::CameraToViewer, "porch", "v-abc123", msg, &mac));
        assert!(!k.verify_message(Direction::ViewerToCamera, "porch2", "v-abc123", msg, &mac));
        assert!(!k.verify_message(Direction::ViewerToCamera, "porch", "v-abc124", msg, &mac));
        assert!(!k.verify_message(
            Direction::ViewerToCamera,
            "porch",
            "v-abc123",
            &msg.replace("v=0", "v=1"),
            &mac
        ));
        assert!(!k.verify_message(
            Direction::ViewerToCamera,
            "porch",
            "v-abc123",
            msg,
            "not base64!"
        ));
        assert_eq!(ViewerKey::from_base64url(&k.to_base64url()), Ok(k.clone()));
        let token = k.token("porch", "alice", 1_798_675_200);
        assert!(k.verify_token("porch", "alice", 1_798_675_200, &token));
        assert!(!k.verify_token("porch", "alice", 1_798_675_201, &token));
        assert!(!k.verify_token("porch2", "alice", 1_798_675_200, &token));
        assert!(!k.verify_token("porch", "alice", 1_798_675_200, &token.replace('a', "b")));
    }

    #[test]
    fn names_and_secrets() {
        assert!(check_name("alice.b-c_1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_name("al ice").is_err());
        assert!(check_name("alicé").is_err());
        let a = Secret::generate().unwrap();
        assert_ne!(a, Secret::generate().unwrap());
        assert_eq!(format!("{a:?}"), "Secret(…)");
        assert!(ViewerKey::from_base64url("AAAA").is_err());
    }
}
