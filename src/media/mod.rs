//! Capture → encode → fan-out, and talk-back playback. Only [`gst`] and [`playback`]
//! touch the `gstreamer` crate.
//!
//! - [`pipeline`]: pure pipeline description from config and probed elements.
//! - [`gst`]: the capture GStreamer adapter (appsinks, bus, force-key-unit).
//! - [`playback`]: the talk-back GStreamer adapter (Opus RTP → ALSA).
//! - [`hub`]: encode once, per-viewer bounded queues with keyframe gating.
//! - [`supervisor`]: restarts capture on error, EOS or stall; [`restart`]: when (pure).
//! - [`devices`]: V4L2 and ALSA discovery through the `v4l` and `alsa` crates.
//! - [`shed`]: withholds the low rung while the encoders cannot keep up (pure policy).
//! - [`snapshot`]: JPEGs of the current picture from a branch that runs only on request.
//! - [`h264`]: the few H.264 bitstream facts edgecam needs (NAL types, SPS profile).
//! - [`stamp`]: the capture-time stamp painted into the test pattern (glass-to-glass).

pub mod devices;
pub mod gst;
pub mod h264;
pub mod hub;
pub mod mode;
pub mod pipeline;
pub mod playback;
pub mod restart;
pub mod shed;
pub mod snapshot;
pub mod stamp;
pub mod supervisor;

use bytes::Bytes;
use std::time::{Duration, Instant};

/// Where a capture run's output goes: one hub per rung and stream, and the snapshot
/// service. Cheap to clone; the same for every run, so viewers outlive restarts.
#[derive(Clone)]
pub struct Outputs {
    /// The main H.264 rung.
    pub video: hub::Hub,
    /// Opus.
    pub audio: hub::Hub,
    /// The VP8 rung (fed only while subscribed).
    pub vp8: hub::Hub,
    /// The low H.264 rung (fed only while subscribed).
    pub low: hub::Hub,
    /// JPEGs of the snapshot branch.
    pub snapshots: snapshot::Snapshots,
}

/// Which elementary stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// H.264 video.
    Video,
    /// Opus audio.
    Audio,
}

/// One encoded unit as it leaves the encoder: an H.264 access unit (Annex B byte-stream,
/// SPS/PPS in front of every IDR) or one Opus packet. Cloning is a reference-count bump.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Encoded bytes.
    pub data: Bytes,
    /// Presentation time since the stream started, continuous across capture restarts.
    pub pts: Duration,
    /// Frame duration from the buffer (or from PTS deltas), zero if unknown.
    pub duration: Duration,
    /// IDR access unit (video) — always true for audio.
    pub keyframe: bool,
    /// When the frame was captured, on this process's monotonic clock (from the buffer PTS
    /// against the pipeline clock), for the capture→RTP-send latency figure.
    pub captured_at: Instant,
}

/// What the running encoder really emits, learnt from its first keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFormat {
    /// `profile-level-id` (RFC 6184 §8.1) as six hex digits, e.g. `42c01f`.
    pub profile_level_id: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Frames per second (nominal).
    pub fps: u32,
}
