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
use std::sync::{Arc, OnceLock};
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
    /// The frame cut into RTP payloads, filled by the first viewer session that sends it
    /// and shared by every other (see [`Frame::payloads_with`]). Empty when published.
    pub payloads: Arc<OnceLock<Arc<[Bytes]>>>,
}

impl Frame {
    /// The frame's RTP payloads: computed by `packetize` for the first caller, the same
    /// shared slices for every later one. So a frame is packetized once however many
    /// viewers send it, and the packets each viewer keeps for retransmission (about a
    /// second of them, `peer::retransmit::HISTORY`) hold one copy of the media between
    /// them, not one each. Only for payloaders that carry no state from one frame to the
    /// next and take the same size limit for every viewer (H.264 and Opus here; VP8's
    /// picture ID counts the frames each viewer was sent).
    pub fn payloads_with(&self, packetize: impl FnOnce(&Bytes) -> Vec<Bytes>) -> Arc<[Bytes]> {
        self.payloads
            .get_or_init(|| packetize(&self.data).into())
            .clone()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_packetized_once_and_its_payloads_shared_by_every_clone() {
        let frame = Frame {
            data: Bytes::from_static(b"access unit"),
            pts: Duration::ZERO,
            duration: Duration::from_millis(33),
            keyframe: true,
            captured_at: Instant::now(),
            payloads: Default::default(),
        };
        let (a, b) = (frame.clone(), frame.clone());
        let mut calls = 0;
        let first = a.payloads_with(|d| {
            calls += 1;
            vec![d.slice(..6), d.slice(6..)]
        });
        let second = b.payloads_with(|_| {
            calls += 1;
            Vec::new()
        });
        assert_eq!(
            calls, 1,
            "the second viewer reuses the first one's payloads"
        );
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            &*second,
            &[Bytes::from_static(b"access"), Bytes::from_static(b" unit")]
        );
    }
}
