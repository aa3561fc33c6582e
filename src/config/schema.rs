//! The configuration file's shape: one type per section, defaults, and the typed
//! values (enums, addresses, ranges) serde checks while it reads the file.

use super::BrokerUrl;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// `[camera]`: identity.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Camera id, `[A-Za-z0-9_-]{1,64}`; default: the host name, sanitised.
    pub id: Option<String>,
    /// Display name; default: the id.
    pub name: Option<String>,
}

/// `[access] mode`: who may watch (`shared/design/access-v1.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Anyone who reaches the broker (protocol 1 as it is); warned about at start.
    Open,
    /// Only viewers holding an invitation: signed requests, signed replies (default).
    #[default]
    Invite,
}

/// `[access]`: invite mode.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// `open` or `invite`.
    pub mode: AccessMode,
    /// File holding the 32-byte access secret (raw, or as base64url text); default:
    /// `access-secret` in the state directory, generated at first start (mode 0600).
    pub secret_file: Option<PathBuf>,
    /// Viewer names whose invitations no longer count (applied on reload).
    pub revoked: Vec<String>,
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
    /// A GStreamer source of the owner's (`video.pipeline`), producing raw video that
    /// edgecam scales to the configured size and encodes: a shared-memory feed
    /// (`shmsrc`), a network stream decoded by `decodebin`, a file.
    Pipeline,
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
    /// For `source = "pipeline"`: a `gst-launch` description of the source's elements,
    /// ending in raw video (`video/x-raw`, any format, size and rate).
    pub pipeline: String,
    /// V4L2 format.
    pub format: V4l2Format,
    /// Wished width, pixels (a V4L2 camera's mode is negotiated from what it offers:
    /// `media::mode::negotiate`).
    pub width: u32,
    /// Wished height, pixels.
    pub height: u32,
    /// Wished frames per second.
    pub fps: u32,
    /// Take a V4L2 camera's mode only when it is exactly the wish (size, and the rate or
    /// faster), and refuse to start otherwise.
    pub strict_mode: bool,
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
    /// Target bitrate of the VP8 rung, kbit/s, for viewers whose browser offers no
    /// H.264 (Firefox without its OpenH264 plugin); it is encoded only while such a
    /// viewer watches. 0 = no VP8 rung.
    pub vp8_bitrate_kbps: u32,
    /// Width of the VP8 rung, pixels (even); the height keeps the picture's aspect.
    pub vp8_width: u32,
    /// Target bitrate of the low H.264 rung, kbit/s: what a viewer whose link cannot
    /// carry the main rung is switched to; encoded only while a viewer takes it.
    /// 0 = no low rung (every H.264 viewer gets the main rung).
    pub low_bitrate_kbps: u32,
    /// Width of the low H.264 rung, pixels (even); the height keeps the aspect.
    pub low_width: u32,
    /// Test pattern only: paint the wall-clock capture time (ms) into each frame as a
    /// row of blocks (`media::stamp`), for glass-to-glass latency measurements.
    pub stamp_capture_time: bool,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            source: VideoSource::Auto,
            device: PathBuf::from("/dev/video0"),
            pipeline: String::new(),
            format: V4l2Format::Auto,
            width: 1280,
            height: 720,
            fps: 30,
            strict_mode: false,
            bitrate_kbps: 2000,
            keyframe_interval_ms: 2000,
            encoder: EncoderChoice::Auto,
            stall_timeout_ms: 5000,
            restart_limit: 10,
            viewer_queue_frames: 15,
            vp8_bitrate_kbps: 500,
            vp8_width: 640,
            low_bitrate_kbps: 500,
            low_width: 640,
            stamp_capture_time: false,
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
    /// ALSA PCM that viewers' talk-back plays on (e.g. `default` or `hw:1,0`); unset =
    /// no two-way audio. Viewers talk one at a time.
    pub playback_device: Option<String>,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            source: AudioSource::Auto,
            device: "default".into(),
            bitrate_kbps: 32,
            channels: 1,
            playback_device: None,
        }
    }
}

/// `[signaling]`: the MQTT broker the camera signals through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    /// `mqtt://host:port`, `mqtts://host:port`, `ws://host:port/path` or `wss://…`
    /// (credentials in the URL, `mqtt://user:pw@host`, are used when `username` is
    /// unset); unset = the embedded broker. Parsed once, when the file is read.
    pub broker: Option<BrokerUrl>,
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
    /// Longest wait between reconnect attempts before jitter, ms (default 800): with
    /// jitter up to twice that, so a camera is back (subscribed, status republished)
    /// within about 1.6 s of its broker's return. Raise it for large fleets on one
    /// broker, whose return would otherwise meet every camera at once.
    pub reconnect_max_ms: u32,
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
            reconnect_max_ms: 800,
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

/// `[homeassistant]`: Home Assistant MQTT discovery (`docs/integrations.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish discovery configs, snapshots and telemetry on the broker. Needs an
    /// external broker (`signaling.broker`), the one Home Assistant uses.
    pub enabled: bool,
    /// Home Assistant's discovery prefix (its MQTT integration's setting).
    pub discovery_prefix: String,
    /// Seconds between JPEGs on the camera entity's topic; 0 = on request only.
    pub snapshot_interval_s: u32,
    /// Seconds between telemetry messages (viewers, bitrate, frame rate averaged over
    /// the interval).
    pub telemetry_interval_s: u32,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            discovery_prefix: "homeassistant".into(),
            snapshot_interval_s: 10,
            telemetry_interval_s: 10,
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
    /// Whether any URL is a TURN URL allocated over UDP (see [`is_udp_turn_url`]).
    pub fn has_udp_turn(&self) -> bool {
        self.urls.iter().any(|u| is_udp_turn_url(u))
    }

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
    pub ice_transport_policy: IceTransportPolicy,
    /// The `iceTransportPolicy` viewers are told to use in `config`: `"all"` or
    /// `"relay"`.
    pub viewer_ice_transport_policy: IceTransportPolicy,
    /// Local addresses to gather UDP host candidates on; empty = all interfaces
    /// (which skips loopback).
    pub udp_bind: Vec<IpAddr>,
    /// ICE must reach `connected` this long after an offer, s (contract: 30).
    pub connect_timeout_s: u32,
    /// Lifetime of minted TURN REST credentials, s (default 900: a credential read off
    /// a broker without TLS relays for at most 15 min; a live session gets fresh ones,
    /// with an ICE restart, every 10 min; see docs/nat-traversal.md).
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
    pub port_range: PortRange,
    /// Public addresses of a camera behind a 1:1 NAT (known public IP), advertised in
    /// its candidates.
    pub nat_1to1_ips: Vec<IpAddr>,
    /// How `nat_1to1_ips` are advertised: `"host"` (replace) or `"srflx"` (add).
    pub nat_1to1_candidate_type: Nat1To1Type,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            max_viewers: 10,
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            viewer_ice_transport_policy: IceTransportPolicy::All,
            udp_bind: Vec::new(),
            connect_timeout_s: 30,
            turn_credential_ttl_s: 900,
            turn_refresh_before_s: 300,
            tcp_bind: Vec::new(),
            port_range: PortRange::default(),
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
    pub level: LogLevel,
    /// Log viewers' addresses (`PEER_ADDR`) redacted to their /24 (IPv4) or /48 (IPv6).
    pub redact_peer_addr: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            target: LogTarget::Auto,
            level: LogLevel::Info,
            redact_peer_addr: true,
        }
    }
}

/// An ICE transport policy (W3C `RTCIceTransportPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Every candidate type.
    #[default]
    All,
    /// Relay candidates only (media always through TURN; hides host addresses).
    Relay,
}

impl IceTransportPolicy {
    /// The W3C name, as sent in the `config` message's `iceTransportPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Relay => "relay",
        }
    }
}

/// `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default: start-up, sessions, state changes.
    #[default]
    Info,
    /// Per-message detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `env_logger` / `RUST_LOG` directive name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// `webrtc.port_range`: `[first, last]` with `0 < first <= last`, or `[]` for ephemeral
/// ports. Checked when the file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "Vec<u16>")]
pub struct PortRange(Option<(u16, u16)>);

impl PortRange {
    /// `(first, last)`, or `None` for ephemeral ports.
    pub fn bounds(self) -> Option<(u16, u16)> {
        self.0
    }
}

impl TryFrom<Vec<u16>> for PortRange {
    type Error = String;

    fn try_from(v: Vec<u16>) -> Result<Self, String> {
        match v.as_slice() {
            [] => Ok(Self(None)),
            [first, last] if *first > 0 && first <= last => Ok(Self(Some((*first, *last)))),
            _ => Err("webrtc.port_range: [first, last] with 0 < first <= last, or empty".into()),
        }
    }
}

/// Whether `url` is a TURN URL allocated over UDP (RFC 7065 §3: `turn:` defaults to
/// UDP unless `?transport=tcp`).
pub fn is_udp_turn_url(url: &str) -> bool {
    url.starts_with("turn:") && !url.to_ascii_lowercase().contains("transport=tcp")
}
