//! `edgecam.toml` → validated, typed [`Config`]. Every key is documented in
//! `docs/configuration.md`; unknown keys are errors that name the line and the key.

use crate::signaling::protocol::Id;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
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
}

/// `[camera]`: identity.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Camera id, `[A-Za-z0-9_-]{1,64}`; default: the host name, sanitised.
    pub id: Option<String>,
    /// Display name; default: the id.
    pub name: Option<String>,
}

/// Video source kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VideoSource {
    /// libcamera if present, else the first V4L2 capture device, else the test pattern.
    #[default]
    Auto,
    /// `videotestsrc` with a moving pattern and a clock overlay.
    Test,
    /// A V4L2 device (`video.device`).
    V4l2,
    /// A CSI camera through `libcamerasrc`.
    Libcamera,
}

/// What format to ask a V4L2 camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum V4l2Format {
    /// H.264 if the camera offers it (passthrough), else MJPEG, else raw.
    #[default]
    Auto,
    /// Uncompressed frames, encoded by edgecam.
    Raw,
    /// MJPEG, decoded then encoded.
    Mjpeg,
    /// H.264 straight from the camera (no re-encode).
    H264,
}

/// H.264 encoder choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncoderChoice {
    /// `v4l2h264enc` when the element and its device exist, else `x264enc`.
    #[default]
    Auto,
    /// Software `x264enc tune=zerolatency speed-preset=ultrafast`.
    X264,
    /// The Raspberry Pi's hardware encoder.
    V4l2h264enc,
}

/// `[video]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Source kind.
    pub source: VideoSource,
    /// V4L2 device path.
    pub device: PathBuf,
    /// V4L2 format.
    pub format: V4l2Format,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Encoder target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Periodic IDR interval, ms (viewers get a forced IDR on join regardless).
    pub keyframe_interval_ms: u32,
    /// Encoder.
    pub encoder: EncoderChoice,
    /// No video frame for this long restarts capture, ms.
    pub stall_timeout_ms: u32,
    /// Consecutive failed capture runs (errors or stalls, restarted with backoff) after
    /// which edgecam stops petting the systemd watchdog, so systemd restarts the
    /// service. Without a watchdog capture keeps being retried.
    pub restart_limit: u32,
    /// Frames a viewer may have queued before it drops to the next keyframe.
    pub viewer_queue_frames: usize,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            source: VideoSource::Auto,
            device: PathBuf::from("/dev/video0"),
            format: V4l2Format::Auto,
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2000,
            keyframe_interval_ms: 2000,
            encoder: EncoderChoice::Auto,
            stall_timeout_ms: 5000,
            restart_limit: 5,
            viewer_queue_frames: 15,
        }
    }
}

/// Audio source kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioSource {
    /// The ALSA device if it exists, else the test tone when video is the test pattern, else none.
    #[default]
    Auto,
    /// `audiotestsrc` sine tone.
    Test,
    /// ALSA capture device `audio.device`.
    Alsa,
    /// No audio.
    None,
}

/// `[audio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Source kind.
    pub source: AudioSource,
    /// ALSA PCM name, e.g. `default` or `hw:1,0`.
    pub device: String,
    /// Opus bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            source: AudioSource::Auto,
            device: "default".into(),
            bitrate_kbps: 32,
            channels: 1,
        }
    }
}

/// `[signaling]`: the MQTT broker the camera signals through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    /// `mqtt://host:port`, `mqtts://host:port`, `ws://host:port/path` or `wss://…`; unset =
    /// the embedded broker.
    pub broker: Option<String>,
    /// Topic prefix.
    pub prefix: String,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the MQTT password (e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle for `mqtts://` / `wss://`; default: the bundled Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// MQTT client id; default `edgecam-<camera id>`.
    pub client_id: Option<String>,
    /// MQTT keep-alive, s.
    pub keep_alive_s: u16,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            broker: None,
            prefix: "edgecam".into(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_id: None,
            keep_alive_s: 15,
        }
    }
}

/// `[broker]`: the embedded MQTT broker of standalone mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// MQTT over TCP listener (the camera's own client connects here).
    pub listen: SocketAddr,
    /// MQTT over WebSocket listener (browsers connect here).
    pub ws_listen: SocketAddr,
    /// Username viewers must present; unset = anonymous.
    pub username: Option<String>,
    /// Password viewers must present (prefer `password_file`).
    pub password: Option<String>,
    /// File holding that password.
    pub password_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1883".parse().expect("literal address"),
            ws_listen: "0.0.0.0:9001".parse().expect("literal address"),
            username: None,
            password: None,
            password_file: None,
        }
    }
}

/// `[http]`: the viewer page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve the viewer page.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Serve files from this directory instead of the copy built into the binary.
    pub web_root: Option<PathBuf>,
    /// Broker WebSocket URL the page uses; default: the embedded broker on the page's host.
    pub broker_ws_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:8080".parse().expect("literal address"),
            web_root: None,
            broker_ws_url: None,
        }
    }
}

/// One `[[webrtc.ice_servers]]` entry (W3C `RTCIceServer`, RFC 7064/7065 URLs).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IceServerConfig {
    /// `stun:`, `turn:` (`?transport=udp|tcp`) or `turns:` URLs.
    pub urls: Vec<String>,
    /// Static TURN username (long-term credential, RFC 8489 §9.2).
    pub username: Option<String>,
    /// Static TURN password (prefer `credential_file`).
    pub credential: Option<String>,
    /// File holding the static TURN password.
    pub credential_file: Option<PathBuf>,
    /// TURN REST shared secret (coturn `static-auth-secret`); edgecam then mints
    /// time-limited credentials itself. Prefer `secret_file`.
    pub secret: Option<String>,
    /// File holding the TURN REST shared secret.
    pub secret_file: Option<PathBuf>,
    /// Hand this server to viewers in `config`. Default: yes for STUN servers and
    /// TURN REST secrets (viewers get minted credentials, never the secret), no for
    /// static long-term credentials (they are only shared when set to `true`).
    pub share_with_viewers: Option<bool>,
}

impl IceServerConfig {
    /// Whether any URL is a TURN URL (`turn:` or `turns:`).
    pub fn is_turn(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("turn"))
    }

    /// Whether viewers get this server in `config` (see `share_with_viewers`).
    pub fn shared_with_viewers(&self) -> bool {
        self.share_with_viewers
            .unwrap_or(!self.is_turn() || self.secret.is_some())
    }
}

/// Candidate type used for `nat_1to1_ips` (pion/webrtc-rs `NAT1To1IPCandidateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Nat1To1Type {
    /// Replace the private host address by the public one in host candidates.
    #[default]
    Host,
    /// Keep the private host candidates and add the public address as srflx.
    Srflx,
}

/// `[webrtc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Open sessions allowed at once.
    pub max_viewers: u32,
    /// STUN/TURN servers for the camera and, via `config`, for viewers. Default: none
    /// (host candidates only, LAN).
    pub ice_servers: Vec<IceServerConfig>,
    /// The camera's ICE transport policy: `"all"` or `"relay"` (relay-only hides the
    /// camera's addresses; needs a `turn:` server reachable over UDP).
    pub ice_transport_policy: String,
    /// The `iceTransportPolicy` viewers are told to use in `config`: `"all"` or
    /// `"relay"`.
    pub viewer_ice_transport_policy: String,
    /// Local addresses to gather UDP host candidates on; empty = all interfaces
    /// (which skips loopback).
    pub udp_bind: Vec<IpAddr>,
    /// ICE must reach `connected` this long after an offer, s (contract: 30).
    pub connect_timeout_s: u32,
    /// Lifetime of minted TURN REST credentials, s (default 3600).
    pub turn_credential_ttl_s: u32,
    /// A live session gets a fresh `config` this long before its credentials expire, s
    /// (contract default 300; half the TTL when the TTL is shorter).
    pub turn_refresh_before_s: u32,
    /// Local addresses for ICE-TCP passive host candidates (RFC 6544); empty = no
    /// ICE-TCP.
    pub tcp_bind: Vec<IpAddr>,
    /// `[first, last]` local port range for ICE sockets (UDP and ICE-TCP), so a
    /// firewall rule can be written; each session takes one port per bind address.
    /// Empty = ephemeral ports.
    pub port_range: Vec<u16>,
    /// Public addresses of a camera behind a 1:1 NAT (known public IP), advertised in
    /// its candidates.
    pub nat_1to1_ips: Vec<String>,
    /// How `nat_1to1_ips` are advertised: `"host"` (replace) or `"srflx"` (add).
    pub nat_1to1_candidate_type: Nat1To1Type,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            max_viewers: 10,
            ice_servers: Vec::new(),
            ice_transport_policy: "all".into(),
            viewer_ice_transport_policy: "all".into(),
            udp_bind: Vec::new(),
            connect_timeout_s: 30,
            turn_credential_ttl_s: 3600,
            turn_refresh_before_s: 300,
            tcp_bind: Vec::new(),
            port_range: Vec::new(),
            nat_1to1_ips: Vec::new(),
            nat_1to1_candidate_type: Nat1To1Type::Host,
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when started by systemd with a journal stream, else stderr.
    #[default]
    Auto,
    /// systemd journal.
    Journald,
    /// Standard error.
    Stderr,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Target.
    pub target: LogTarget,
    /// `error`, `warn`, `info`, `debug` or `trace` (`RUST_LOG` overrides).
    pub level: String,
    /// Log viewers' addresses (`PEER_ADDR`) redacted to their /24 (IPv4) or /48 (IPv6).
    pub redact_peer_addr: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            target: LogTarget::Auto,
            level: "info".into(),
            redact_peer_addr: true,
        }
    }
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

    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        read_secret(
            &mut self.signaling.password,
            self.signaling.password_file.as_deref(),
            "signaling.password_file",
        )?;
        read_secret(
            &mut self.broker.password,
            self.broker.password_file.as_deref(),
            "broker.password_file",
        )?;
        for server in &mut self.webrtc.ice_servers {
            read_secret(
                &mut server.credential,
                server.credential_file.as_deref(),
                "webrtc.ice_servers.credential_file",
            )?;
            read_secret(
                &mut server.secret,
                server.secret_file.as_deref(),
                "webrtc.ice_servers.secret_file",
            )?;
        }
        Ok(())
    }

    /// Checks ranges and consistency.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if let Some(id) = &self.camera.id
            && Id::parse(id).is_err()
        {
            return invalid("camera.id", "must match [A-Za-z0-9_-]{1,64}");
        }
        let v = &self.video;
        if !(16..=7680).contains(&v.width) || !v.width.is_multiple_of(2) {
            return invalid("video.width", "must be even and within 16..=7680");
        }
        if !(16..=4320).contains(&v.height) || !v.height.is_multiple_of(2) {
            return invalid("video.height", "must be even and within 16..=4320");
        }
        if !(1..=120).contains(&v.fps) {
            return invalid("video.fps", "must be within 1..=120");
        }
        if !(50..=50_000).contains(&v.bitrate_kbps) {
            return invalid("video.bitrate_kbps", "must be within 50..=50000");
        }
        if !(100..=60_000).contains(&v.keyframe_interval_ms) {
            return invalid("video.keyframe_interval_ms", "must be within 100..=60000");
        }
        if !(500..=600_000).contains(&v.stall_timeout_ms) {
            return invalid("video.stall_timeout_ms", "must be within 500..=600000");
        }
        if !(1..=1000).contains(&v.restart_limit) {
            return invalid("video.restart_limit", "must be within 1..=1000");
        }
        if !(1..=1000).contains(&v.viewer_queue_frames) {
            return invalid("video.viewer_queue_frames", "must be within 1..=1000");
        }
        if !(6..=510).contains(&self.audio.bitrate_kbps) {
            return invalid("audio.bitrate_kbps", "must be within 6..=510");
        }
        if !(1..=2).contains(&self.audio.channels) {
            return invalid("audio.channels", "must be 1 or 2");
        }
        if let Some(url) = &self.signaling.broker {
            BrokerUrl::parse(url).map_err(|problem| ConfigError::Invalid {
                key: "signaling.broker",
                problem,
            })?;
        }
        if self.signaling.prefix.is_empty()
            || self.signaling.prefix.contains(['+', '#'])
            || self.signaling.prefix.starts_with('/')
        {
            return invalid(
                "signaling.prefix",
                "must be non-empty, without + # or leading /",
            );
        }
        if self.signaling.keep_alive_s < 5 {
            return invalid("signaling.keep_alive_s", "must be at least 5");
        }
        if self.broker.password.is_some() != self.broker.username.is_some() {
            return invalid("broker.username", "username and password go together");
        }
        if !(1..=1000).contains(&self.webrtc.max_viewers) {
            return invalid("webrtc.max_viewers", "must be within 1..=1000");
        }
        if !matches!(self.webrtc.ice_transport_policy.as_str(), "all" | "relay") {
            return invalid(
                "webrtc.ice_transport_policy",
                "must be \"all\" or \"relay\"",
            );
        }
        if !matches!(
            self.webrtc.viewer_ice_transport_policy.as_str(),
            "all" | "relay"
        ) {
            return invalid(
                "webrtc.viewer_ice_transport_policy",
                "must be \"all\" or \"relay\"",
            );
        }
        if !(5..=300).contains(&self.webrtc.connect_timeout_s) {
            return invalid("webrtc.connect_timeout_s", "must be within 5..=300");
        }
        for server in &self.webrtc.ice_servers {
            if server.urls.is_empty() {
                return invalid("webrtc.ice_servers.urls", "at least one URL");
            }
            for url in &server.urls {
                let scheme = url.split(':').next().unwrap_or("");
                if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
                    return invalid(
                        "webrtc.ice_servers.urls",
                        "URLs start with stun:, stuns:, turn: or turns:",
                    );
                }
            }
            let static_cred = server.username.is_some() || server.credential.is_some();
            if server.secret.is_some() && static_cred {
                return invalid(
                    "webrtc.ice_servers.secret",
                    "a TURN REST secret replaces username/credential; give one or the other",
                );
            }
            if server.is_turn()
                && server.secret.is_none()
                && (server.username.is_none() || server.credential.is_none())
            {
                return invalid(
                    "webrtc.ice_servers.username",
                    "turn: servers need username and credential, or a secret",
                );
            }
            if server.secret.as_deref().is_some_and(str::is_empty) {
                return invalid("webrtc.ice_servers.secret", "must not be empty");
            }
        }
        if !(60..=86_400 * 7).contains(&self.webrtc.turn_credential_ttl_s) {
            return invalid("webrtc.turn_credential_ttl_s", "must be within 60..=604800");
        }
        match self.webrtc.port_range.as_slice() {
            [] => {}
            [first, last] if *first > 0 && first <= last => {}
            _ => {
                return invalid(
                    "webrtc.port_range",
                    "[first, last] with 0 < first <= last, or empty",
                );
            }
        }
        for ip in &self.webrtc.nat_1to1_ips {
            if ip.parse::<IpAddr>().is_err() {
                return invalid("webrtc.nat_1to1_ips", "must be IP addresses");
            }
        }
        if self.webrtc.ice_transport_policy == "relay"
            && !self
                .webrtc
                .ice_servers
                .iter()
                .flat_map(|s| &s.urls)
                .any(|u| crate::peer::ice::is_udp_turn_url(u))
        {
            return invalid(
                "webrtc.ice_transport_policy",
                "\"relay\" needs at least one turn: server over UDP (the camera's WebRTC stack allocates over UDP only)",
            );
        }
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return invalid("log.level", "one of error, warn, info, debug, trace");
        }
        Ok(())
    }

    /// The camera id: configured, or the host name with invalid characters replaced.
    pub fn camera_id(&self) -> Id {
        if let Some(id) = &self.camera.id
            && let Ok(id) = Id::parse(id)
        {
            return id;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
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

fn read_secret(
    value: &mut Option<String>,
    file: Option<&Path>,
    key: &'static str,
) -> Result<(), ConfigError> {
    if let Some(file) = file {
        if value.is_some() {
            return Err(ConfigError::Invalid {
                key,
                problem: "give either the value or the file, not both".into(),
            });
        }
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
        let file = credential_path(file, credentials.as_deref().map(Path::new))
            .map_err(|problem| ConfigError::Invalid { key, problem })?;
        let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::Invalid {
            key,
            problem: format!("cannot read {}: {e}", file.display()),
        })?;
        *value = Some(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    Ok(())
}

/// The placeholder a `*_file` path may start with to name a systemd credential.
pub const CREDENTIALS_PLACEHOLDER: &str = "${CREDENTIALS_DIRECTORY}";

/// Resolves a `*_file` path: a leading `${CREDENTIALS_DIRECTORY}` becomes the
/// directory systemd put the unit's `LoadCredential=` files in (systemd.exec(5),
/// "Credentials"), so secrets can stay root-only on disk.
///
/// # Errors
/// The path uses the placeholder but edgecam was started without credentials.
fn credential_path(file: &Path, credentials: Option<&Path>) -> Result<PathBuf, String> {
    let Some(rest) = file
        .to_str()
        .and_then(|s| s.strip_prefix(CREDENTIALS_PLACEHOLDER))
    else {
        return Ok(file.to_owned());
    };
    match credentials {
        Some(dir) => Ok(dir.join(rest.trim_start_matches('/'))),
        None => Err(format!(
            "{} uses {CREDENTIALS_PLACEHOLDER}, but edgecam was not started by systemd with LoadCredential=",
            file.display()
        )),
    }
}

/// A parsed `signaling.broker` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Transport.
    pub scheme: BrokerScheme,
    /// Host name or address.
    pub host: String,
    /// Port (defaults: 1883, 8883, 80, 443).
    pub port: u16,
    /// Full URL (WebSocket transports connect to it as written).
    pub url: String,
}

/// Transport of a broker URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerScheme {
    /// MQTT over TCP.
    Mqtt,
    /// MQTT over TLS.
    Mqtts,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over secure WebSocket.
    Wss,
}

impl BrokerUrl {
    /// Parses `scheme://host[:port][/path]`.
    ///
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected scheme://host[:port]".to_owned())?;
        let (scheme, default_port) = match scheme {
            "mqtt" | "tcp" => (BrokerScheme::Mqtt, 1883),
            "mqtts" | "ssl" => (BrokerScheme::Mqtts, 8883),
            "ws" => (BrokerScheme::Ws, 80),
            "wss" => (BrokerScheme::Wss, 443),
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| "unclosed [ in IPv6 host".to_owned())?;
            let port = after.strip_prefix(':').map(str::parse::<u16>).transpose();
            (h.to_owned(), port.map_err(|e| e.to_string())?)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    Some(p.parse::<u16>().map_err(|e| e.to_string())?),
                ),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        Ok(Self {
            scheme,
            host,
            port: port.unwrap_or(default_port),
            url: url.to_owned(),
        })
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
            ("[signaling]\nbroker = \"http://x\"", "signaling.broker"),
            ("[camera]\nid = \"has space\"", "camera.id"),
            (
                "[[webrtc.ice_servers]]\nurls = [\"turn:127.0.0.1:3478\"]",
                "webrtc.ice_servers.username",
            ),
        ] {
            match Config::parse(text, "t") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn credential_paths_resolve_against_the_credentials_directory() {
        let creds = Path::new("/run/credentials/edgecam.service");
        assert_eq!(
            credential_path(
                Path::new("${CREDENTIALS_DIRECTORY}/turn-secret"),
                Some(creds)
            )
            .unwrap(),
            creds.join("turn-secret")
        );
        assert_eq!(
            credential_path(Path::new("/etc/edgecam/secret"), None).unwrap(),
            Path::new("/etc/edgecam/secret")
        );
        let err = credential_path(Path::new("${CREDENTIALS_DIRECTORY}/x"), None).unwrap_err();
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
    fn broker_urls_parse() {
        let u = BrokerUrl::parse("mqtts://broker.example:8884").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (BrokerScheme::Mqtts, "broker.example", 8884)
        );
        let u = BrokerUrl::parse("mqtt://127.0.0.1").unwrap();
        assert_eq!(u.port, 1883);
        let u = BrokerUrl::parse("ws://[::1]:9001/mqtt").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9001));
        assert!(BrokerUrl::parse("127.0.0.1:1883").is_err());
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
        assert_eq!(pi.webrtc.port_range, [50_000, 50_099]);
    }

    #[test]
    fn sanitizes_host_names_into_ids() {
        assert_eq!(sanitize_id("pi.local"), "pi-local");
        assert_eq!(sanitize_id(""), "edgecam");
        assert!(Id::parse(&sanitize_id(&"x".repeat(100))).is_ok());
    }
}
