//! The `/api/stats` document: what the camera is doing now, for dashboards, the
//! benchmark and troubleshooting.

use crate::media::mode::CaptureMode;
use crate::peer::stats::{LatencySummary, SessionSnapshot};
use serde::Serialize;

/// `GET /api/stats` (JSON, camelCase keys). Counters are totals since this start of the
/// camera (a reload starts them again).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiStats {
    /// Capture supervisor state: `Starting`, `Running`, `Restarting { failures, reason }`
    /// or `Stopped` (Rust debug notation).
    pub capture: String,
    /// H.264 access units the encoder delivered to the hub.
    pub video_frames_published: u64,
    /// Opus packets delivered to the hub (0 without audio).
    pub audio_packets_published: u64,
    /// Keyframe (force-key-unit) requests sent upstream after coalescing.
    pub keyframe_requests_sent: u64,
    /// Capture → RTP send latency over all sessions (p50/p99/max, ms).
    pub capture_to_rtp_latency: LatencySummary,
    /// Start → first encoded frame, ms; `null` until then.
    pub start_to_first_frame_ms: Option<u64>,
    /// The V4L2 mode negotiated from the camera's offer (`kind`, `fourcc`, `width`,
    /// `height`, `fps` in Hz); `null` for the test pattern and libcamera.
    pub capture_mode: Option<CaptureMode>,
    /// One entry per open session, ordered by session id (refreshed once per
    /// housekeeping tick, ≤ 1 s old).
    pub sessions: Vec<SessionSnapshot>,
    /// Tasks alive on the async runtime (tokio's `num_alive_tasks`): flat over time
    /// when nothing leaks; the soak (`edgecam-bench soak`) watches it.
    pub runtime_tasks: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_documented_camel_case_names() {
        let doc = serde_json::to_value(ApiStats {
            capture: "Running".into(),
            video_frames_published: 3,
            audio_packets_published: 5,
            keyframe_requests_sent: 1,
            capture_to_rtp_latency: LatencySummary {
                count: 2,
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 2.0,
            },
            start_to_first_frame_ms: None,
            capture_mode: None,
            sessions: vec![],
            runtime_tasks: Some(7),
        })
        .expect("serialises");
        let mut keys: Vec<&str> = doc
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "audioPacketsPublished",
                "capture",
                "captureMode",
                "captureToRtpLatency",
                "keyframeRequestsSent",
                "runtimeTasks",
                "sessions",
                "startToFirstFrameMs",
                "videoFramesPublished"
            ]
        );
        assert_eq!(doc["startToFirstFrameMs"], serde_json::Value::Null);
        assert_eq!(doc["captureToRtpLatency"]["p50_ms"], 1.0);
    }
}
