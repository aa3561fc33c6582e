//! WebRTC side: one `RTCPeerConnection` per viewer. Only this module imports `webrtc`
//! (pinned to 0.21.x) and `rtc`.
//!
//! - [`Peers`] (`registry`): the session registry; turns `PeerCommand`s into
//!   per-session tasks, supervises them, and reports [`PeerReport`]s back.
//! - `session`: one viewer (peer connection, tracks fed from hub subscriptions, RTCP).
//! - [`sdp`]: offer validation (ICE servers and TURN credentials: `crate::ice`).
//! - [`control`]: the `control` data channel's protocol (snapshot, stats, keyframe).
//! - [`stats`]: counters and the capture→RTP-send latency histogram.
//! - [`probe`]: a receive-only viewer that counts what arrives (selftest, benchmark).
//! - [`adapt`]: which rung of the H.264 ladder a viewer gets, from its estimate.
//! - `estimate`: the interceptor that hands a session its GCC bandwidth estimate.
//! - [`retransmit`]: answers NACKs from a bounded history within a budget.

pub mod adapt;
pub mod budget;
pub mod bwprobe;
mod estimate;
mod feedback;
mod nat;
pub mod pace;
pub mod retransmit;
mod rtx_bind;

pub mod control;
pub mod probe;
mod registry;
pub mod sdp;
mod session;
pub mod stats;

pub use registry::{Peers, REPORT_QUEUE};
pub use session::SessionError;
pub use session::rtp::RtpClock;

use crate::media::VideoFormat;
use crate::media::hub::Hub;
use crate::media::snapshot::Snapshots;
use crate::signaling::machine::PeerEvent;
use crate::signaling::protocol::SessionId;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// The signaling front-end a session came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frontend {
    /// MQTT (signaling-v1): candidates trickle both ways.
    #[default]
    Mqtt,
    /// WHEP (`crate::whep`): the answer carries all of the camera's candidates.
    Whep,
}

impl Frontend {
    /// The label in metrics and stats: `mqtt`, `whep`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Whep => "whep",
        }
    }

    /// Whether the camera trickles its candidates (else it answers once gathering is
    /// complete, with all of them in the SDP).
    pub fn trickles(self) -> bool {
        self == Self::Mqtt
    }
}

/// Settings shared by all sessions.
#[derive(Debug, Clone, Default)]
pub struct PeerSettings {
    /// Camera id: part of the TURN REST user the camera mints for itself.
    pub camera: String,
    /// ICE servers and policy.
    pub ice: crate::ice::IcePolicy,
    /// Addresses to gather UDP host candidates on; empty = all interfaces.
    pub udp_bind: Vec<IpAddr>,
    /// Addresses for ICE-TCP passive candidates (RFC 6544); empty = no ICE-TCP.
    pub tcp_bind: Vec<IpAddr>,
    /// Local ports ICE sockets are bound to.
    pub ports: PortPool,
    /// Public address of a 1:1 NAT in front of the camera (the first of `nat_1to1_ips`).
    pub nat_1to1_ip: Option<String>,
    /// Advertise `nat_1to1_ip` as srflx (keeping host candidates) instead of replacing
    /// the host addresses.
    pub nat_1to1_srflx: bool,
    /// Log viewers' addresses (`PEER_ADDR`) redacted to their network.
    pub redact_peer_addr: bool,
}

/// Hands out local ports for ICE sockets: round-robin over `[first, last]` so that a
/// firewall rule can name the range, or always 0 (ephemeral) without a range.
#[derive(Debug, Clone, Default)]
pub struct PortPool {
    range: Option<(u16, u16)>,
    next: Arc<std::sync::atomic::AtomicU32>,
}

impl PortPool {
    /// A pool over `first..=last`; `None` = ephemeral ports.
    pub fn new(range: Option<(u16, u16)>) -> Self {
        Self {
            range,
            next: Arc::default(),
        }
    }

    /// How many different ports a session may try before giving up (at most 64).
    pub fn attempts(&self) -> usize {
        self.range
            .map_or(1, |(a, b)| (usize::from(b - a) + 1).min(64))
    }

    /// The next port to try (0 = ephemeral).
    pub fn take(&self) -> u16 {
        match self.range {
            None => 0,
            Some((first, last)) => {
                let span = u32::from(last - first) + 1;
                let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The remainder is < span <= 65536 and first + it <= last.
                first + u16::try_from(n % span).unwrap_or(0)
            }
        }
    }
}

/// The media a session feeds from.
#[derive(Debug, Clone)]
pub struct MediaFeeds {
    /// H.264 hub.
    pub video: Hub,
    /// Opus hub, `None` without audio.
    pub audio: Option<Hub>,
    /// The VP8 rung (for viewers without H.264), `None` without one.
    pub vp8: Option<adapt::LadderRung>,
    /// The H.264 rungs a viewer can be switched between, highest first; the first is
    /// `video` (the main rung). A single rung means no switching.
    pub ladder: Vec<adapt::LadderRung>,
    /// How many of the ladder's lowest rungs are withheld now because the encoders
    /// cannot keep up (`media::shed`): sessions leave them and new ones skip them.
    pub withheld: watch::Receiver<usize>,
    /// What the encoder emits, `None` until its first keyframe.
    pub format: watch::Receiver<Option<VideoFormat>>,
    /// JPEGs of the current picture, for the `control` data channel's `snapshot`.
    pub snapshots: Snapshots,
    /// Talk-back to the camera's speaker, `None` without `[audio] playback_device`.
    pub talk: Option<crate::talk::Talkback>,
}

/// An event from one session, tagged with the session's generation so a late event
/// from a closed session cannot touch a new one with the same id.
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// Session.
    pub session: SessionId,
    /// Generation (see [`Peers::is_current`]).
    pub generation: u64,
    /// What happened.
    pub event: PeerEvent,
}

#[cfg(test)]
mod tests {
    use super::PortPool;

    #[test]
    fn port_pool_cycles_through_its_range() {
        let pool = PortPool::new(Some((50_000, 50_002)));
        let ports: Vec<u16> = (0..5).map(|_| pool.take()).collect();
        assert_eq!(ports, [50_000, 50_001, 50_002, 50_000, 50_001]);
        assert_eq!(pool.attempts(), 3);
        let ephemeral = PortPool::new(None);
        assert_eq!((ephemeral.take(), ephemeral.attempts()), (0, 1));
        let wide = PortPool::new(Some((1, 65_535)));
        assert_eq!(wide.attempts(), 64);
        assert_eq!(wide.take(), 1);
    }
}
