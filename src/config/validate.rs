//! Ranges and consistency between keys, checked after the file parsed and its
//! secrets were read.

use super::{Config, ConfigError, IceServerConfig, IceTransportPolicy, VideoSource};
use crate::signaling::protocol::Id;

impl Config {
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
        if self
            .access
            .revoked
            .iter()
            .any(|n| crate::access::keys::check_name(n).is_err())
        {
            return invalid("access.revoked", "names must match [A-Za-z0-9_.-]{1,64}");
        }
        let ha = &self.homeassistant;
        if ha.enabled && self.signaling.broker.is_none() {
            return invalid(
                "homeassistant.enabled",
                "needs the broker Home Assistant uses: set signaling.broker",
            );
        }
        if ha.discovery_prefix.is_empty()
            || ha.discovery_prefix.len() > 128
            || ha
                .discovery_prefix
                .split('/')
                .any(|level| level.is_empty() || level.contains(['+', '#', '\0']))
        {
            return invalid(
                "homeassistant.discovery_prefix",
                "must be 1 to 128 characters of non-empty topic levels without + or #",
            );
        }
        if !(1..=3600).contains(&ha.telemetry_interval_s) {
            return invalid(
                "homeassistant.telemetry_interval_s",
                "must be within 1..=3600",
            );
        }
        if ha.snapshot_interval_s > 86_400 {
            return invalid(
                "homeassistant.snapshot_interval_s",
                "must be within 0..=86400 (0 = on request only)",
            );
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
        if v.vp8_bitrate_kbps != 0 && !(50..=50_000).contains(&v.vp8_bitrate_kbps) {
            return invalid(
                "video.vp8_bitrate_kbps",
                "must be 0 (no VP8 rung) or within 50..=50000",
            );
        }
        if !(64..=3840).contains(&v.vp8_width) || !v.vp8_width.is_multiple_of(2) {
            return invalid("video.vp8_width", "must be even and within 64..=3840");
        }
        if v.low_bitrate_kbps != 0 && !(50..=50_000).contains(&v.low_bitrate_kbps) {
            return invalid(
                "video.low_bitrate_kbps",
                "must be 0 (no low rung) or within 50..=50000",
            );
        }
        if v.stamp_capture_time && v.source != VideoSource::Test {
            return invalid(
                "video.stamp_capture_time",
                "is for the test pattern only (source = \"test\")",
            );
        }
        if !(64..=3840).contains(&v.low_width) || !v.low_width.is_multiple_of(2) {
            return invalid("video.low_width", "must be even and within 64..=3840");
        }
        if !(100..=60_000).contains(&v.keyframe_interval_ms) {
            return invalid("video.keyframe_interval_ms", "must be within 100..=60000");
        }
        if !(500..=600_000).contains(&v.stall_timeout_ms) {
            return invalid("video.stall_timeout_ms", "must be within 500..=600000");
        }
        match (v.source, v.pipeline.trim().is_empty()) {
            (VideoSource::Pipeline, true) => {
                return invalid(
                    "video.pipeline",
                    "must be set when video.source = \"pipeline\"",
                );
            }
            (VideoSource::Pipeline, false) | (_, true) => {}
            (_, false) => {
                return invalid(
                    "video.pipeline",
                    "is used only with video.source = \"pipeline\"",
                );
            }
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
        if self.audio.playback_device.as_deref().is_some_and(|d| {
            d.trim().is_empty() || d.len() > 256 || d.chars().any(char::is_control)
        }) {
            return invalid(
                "audio.playback_device",
                "must be an ALSA PCM name (e.g. \"default\" or \"hw:1,0\"), or left out for no two-way audio",
            );
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
        if !(500..=300_000).contains(&self.signaling.reconnect_max_ms) {
            return invalid("signaling.reconnect_max_ms", "must be within 500..=300000");
        }
        if self.broker.password.is_some() != self.broker.username.is_some() {
            return invalid("broker.username", "username and password go together");
        }
        if self.signaling.broker.is_none() && self.http.enabled {
            for (key, addr) in [
                ("broker.listen", self.broker.listen),
                ("broker.ws_listen", self.broker.ws_listen),
            ] {
                if overlap(self.http.listen, addr) {
                    return Err(ConfigError::Invalid {
                        key: "http.listen",
                        problem: format!("{} is also {key}", self.http.listen),
                    });
                }
            }
        }
        if overlap(self.broker.listen, self.broker.ws_listen) {
            return invalid("broker.ws_listen", "must differ from broker.listen");
        }
        if !(1..=1000).contains(&self.webrtc.max_viewers) {
            return invalid("webrtc.max_viewers", "must be within 1..=1000");
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
        if self.webrtc.ice_transport_policy == IceTransportPolicy::Relay
            && !self
                .webrtc
                .ice_servers
                .iter()
                .any(IceServerConfig::has_udp_turn)
        {
            return invalid(
                "webrtc.ice_transport_policy",
                "\"relay\" needs at least one turn: server over UDP (the camera's WebRTC stack allocates over UDP only)",
            );
        }
        Ok(())
    }
}

/// Whether two listeners would take the same port: same fixed port (0 is ephemeral),
/// and the same address or either one the wildcard.
fn overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
