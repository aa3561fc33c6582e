//! `edgecam.toml` → validated, typed [`Config`]. Every key is documented in
//! `docs/configuration.md`; unknown keys are errors that name the line and the key.
//!
//! - `schema`: the sections, their defaults and typed values (serde).
//! - `validate`: ranges and consistency between keys.
//! - `secrets`: `*_file` secrets and systemd credentials.
//! - `broker_url`: `signaling.broker`, parsed once with the `url` crate.

mod broker_url;
mod schema;
mod secrets;
mod validate;

pub use broker_url::{BrokerScheme, BrokerUrl};
pub use schema::*;
pub use secrets::CREDENTIALS_PLACEHOLDER;

use crate::signaling::protocol::Id;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type (the message names line and key).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// toml's message, with line, column and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid value for `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `video.fps`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[camera]`
    pub camera: CameraConfig,
    /// `[video]`
    pub video: VideoConfig,
    /// `[audio]`
    pub audio: AudioConfig,
    /// `[signaling]`
    pub signaling: SignalingConfig,
    /// `[broker]` (embedded broker, used when `signaling.broker` is unset)
    pub broker: BrokerConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[webrtc]`
    pub webrtc: WebrtcConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[access]`
    pub access: AccessConfig,
    /// `[homeassistant]`
    pub homeassistant: HomeAssistantConfig,
}

impl Config {
    /// Reads, parses and validates `path`, resolving `*_file` secrets.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// The camera id: configured, or the host name with invalid characters replaced.
    pub fn camera_id(&self) -> Id {
        if let Some(id) = &self.camera.id
            && let Ok(id) = Id::parse(id)
        {
            return id;
        }
        // uname(2), not /proc/sys/kernel/hostname: the unit's ProcSubset=pid hides
        // /proc/sys, and the service would then name itself differently from
        // `--check-config` run by hand.
        let host = rustix::system::uname();
        let host = host.nodename().to_string_lossy();
        Id::parse(&sanitize_id(host.trim()))
            .unwrap_or_else(|_| Id::parse("edgecam").expect("literal id is valid"))
    }
}

/// Maps any text to `[A-Za-z0-9_-]{1,64}` (other characters become `-`).
pub fn sanitize_id(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "edgecam".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_standalone_default() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.video.source, VideoSource::Auto);
        assert!(c.signaling.broker.is_none());
        assert!(
            c.webrtc.ice_servers.is_empty(),
            "no public server by default"
        );
        assert_eq!(c.webrtc.max_viewers, 10);
    }

    #[test]
    fn unknown_keys_are_rejected_with_line_and_key() {
        let e = Config::parse("[video]\nwidth = 640\nfrobnicate = 1\n", "cam.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("cam.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("frobnicate"), "{msg}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (text, key) in [
            ("[video]\nfps = 0", "video.fps"),
            ("[video]\nwidth = 641", "video.width"),
            (
                "[webrtc]\nice_transport_policy = \"relay\"",
                "webrtc.ice_transport_policy",
            ),
            ("[webrtc]\nmax_viewers = 0", "webrtc.max_viewers"),
            ("[video]\nsource = \"pipeline\"", "video.pipeline"),
            ("[video]\npipeline = \"shmsrc\"", "video.pipeline"),
            ("[camera]\nid = \"has space\"", "camera.id"),
            ("[http]\nlisten = \"127.0.0.1:9001\"", "http.listen"),
            ("[broker]\nlisten = \"0.0.0.0:9001\"", "broker.ws_listen"),
            (
                "[[webrtc.ice_servers]]\nurls = [\"turn:127.0.0.1:3478\"]",
                "webrtc.ice_servers.username",
            ),
            // Home Assistant listens on its own broker, never the embedded one.
            ("[homeassistant]\nenabled = true", "homeassistant.enabled"),
            (
                "[signaling]\nbroker = \"mqtt://h\"\n[homeassistant]\nenabled = true\ndiscovery_prefix = \"ha/#\"",
                "homeassistant.discovery_prefix",
            ),
            (
                "[homeassistant]\ntelemetry_interval_s = 0",
                "homeassistant.telemetry_interval_s",
            ),
        ] {
            match Config::parse(text, "t") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn typed_values_are_checked_while_reading_and_name_their_key() {
        for (text, key) in [
            ("[signaling]\nbroker = \"http://x\"", "broker"),
            (
                "[webrtc]\nice_transport_policy = \"some\"",
                "ice_transport_policy",
            ),
            ("[webrtc]\nport_range = [5, 1]", "port_range"),
            ("[webrtc]\nport_range = [1]", "port_range"),
            (
                "[webrtc]\nnat_1to1_ips = [\"host.example\"]",
                "nat_1to1_ips",
            ),
            ("[log]\nlevel = \"loud\"", "level"),
        ] {
            match Config::parse(text, "t") {
                Err(ConfigError::Parse { message, .. }) => {
                    assert!(message.contains(key), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let c = Config::parse(
            "[signaling]\nbroker = \"mqtt://u:pw@127.0.0.1\"\n[webrtc]\nport_range = []\n",
            "t",
        )
        .unwrap();
        let broker = c.signaling.broker.expect("broker");
        assert_eq!(broker.userinfo, Some(("u".into(), "pw".into())));
        assert_eq!(c.webrtc.port_range.bounds(), None);
    }

    #[test]
    fn credential_paths_resolve_against_the_credentials_directory() {
        let creds = Path::new("/run/credentials/edgecam.service");
        assert_eq!(
            secrets::credential_path(
                Path::new("${CREDENTIALS_DIRECTORY}/turn-secret"),
                Some(creds)
            )
            .unwrap(),
            creds.join("turn-secret")
        );
        assert_eq!(
            secrets::credential_path(Path::new("/etc/edgecam/secret"), None).unwrap(),
            Path::new("/etc/edgecam/secret")
        );
        let err =
            secrets::credential_path(Path::new("${CREDENTIALS_DIRECTORY}/x"), None).unwrap_err();
        assert!(err.contains("LoadCredential="), "{err}");
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let text = format!(
            "[signaling]\nbroker = \"mqtt://127.0.0.1:1883\"\nusername = \"cam\"\npassword_file = \"{}\"\n",
            f.display()
        );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.signaling.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn shipped_examples_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let demo = Config::load(&root.join("examples/demo-loopback.toml")).unwrap();
        assert_eq!(demo.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(demo.broker.ws_listen.to_string(), "127.0.0.1:9001");
        // The Pi example names systemd credentials, which exist only under systemd:
        // everything else about it is valid.
        match Config::load(&root.join("examples/edgecam.toml")) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "signaling.password_file"),
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let mut text = std::fs::read_to_string(root.join("examples/edgecam.toml")).unwrap();
        for name in ["edgecam-mqtt-password", "edgecam-turn-secret"] {
            let file = dir.path().join(name);
            std::fs::write(&file, "x").unwrap();
            text = text.replace(
                &format!("{CREDENTIALS_PLACEHOLDER}/{name}"),
                file.to_str().unwrap(),
            );
        }
        let pi = Config::parse(&text, "edgecam.toml").unwrap();
        assert_eq!(pi.webrtc.ice_servers[1].secret.as_deref(), Some("x"));
        assert_eq!(pi.webrtc.port_range.bounds(), Some((50_000, 50_099)));
    }

    #[test]
    fn sanitizes_host_names_into_ids() {
        assert_eq!(sanitize_id("pi.local"), "pi-local");
        assert_eq!(sanitize_id(""), "edgecam");
        assert!(Id::parse(&sanitize_id(&"x".repeat(100))).is_ok());
    }
}
