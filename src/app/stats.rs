//! What the camera is doing now: the `/api/stats` document and the sources `/metrics`
//! reads, for dashboards, Prometheus, the benchmark and troubleshooting.

use crate::media::hub::Hub;
use crate::media::mode::CaptureMode;
use crate::media::snapshot::Snapshots;
use crate::media::supervisor::CaptureState;
use crate::metrics::{MetricsSnapshot, ViewerGroup};
use crate::peer::stats::{LatencyHistogram, LatencySummary, SessionSnapshot, SessionTotals};
use crate::signaling::mqtt::{LinkState, MqttHandle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

/// The sessions as the camera loop last saw them (refreshed once per housekeeping
/// tick, ≤ 1 s old).
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    /// One entry per open session, ordered by session id.
    pub sessions: Vec<SessionSnapshot>,
    /// Counters summed over every session since start, open and ended.
    pub totals: SessionTotals,
}

/// What `/api/stats` and `/metrics` read at each request.
pub struct Sources {
    /// Written by the camera loop.
    pub peers: Arc<Mutex<PeerView>>,
    /// Capture → RTP send latency, all sessions.
    pub latency: Arc<LatencyHistogram>,
    /// Offer → first video frame sent, all sessions (10 ms buckets).
    pub first_frame: Arc<LatencyHistogram>,
    /// Refused requests by front-end and reason.
    pub refusals: Arc<crate::access::refusals::Refusals>,
    /// The video hub (frames published, keyframe requests).
    pub video_hub: Hub,
    /// The audio hub.
    pub audio_hub: Hub,
    /// The capture supervisor's state.
    pub capture_state: watch::Receiver<CaptureState>,
    /// Capture runs that ended in failure.
    pub capture_failures: Arc<AtomicU64>,
    /// How many of the ladder's lowest rungs are withheld now (`media::shed`).
    pub rungs_withheld: watch::Receiver<usize>,
    /// Times the low rung was withheld since start.
    pub rung_sheds: Arc<AtomicU64>,
    /// Start → first encoded frame, ms.
    pub first_frame_ms: Arc<OnceLock<u64>>,
    /// The snapshot service (JPEGs encoded and served).
    pub snapshots: Snapshots,
    /// Talk-back, when `[audio] playback_device` is set.
    pub talk: Option<crate::talk::Talkback>,
    /// The negotiated V4L2 mode, if any.
    pub capture_mode: Option<CaptureMode>,
    /// The MQTT link (state, connections).
    pub link: MqttHandle,
    /// Invite mode: session ids are replaced by `#1`, `#2`, … in `/api/stats`.
    pub hide_sessions: bool,
}

fn runtime_tasks() -> Option<u64> {
    tokio::runtime::Handle::try_current()
        .ok()
        .and_then(|h| u64::try_from(h.metrics().num_alive_tasks()).ok())
}

impl Sources {
    fn view(&self) -> PeerView {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `/api/stats` document.
    pub fn api_stats(&self) -> ApiStats {
        let mut sessions = self.view().sessions;
        if self.hide_sessions {
            for (i, s) in sessions.iter_mut().enumerate() {
                s.session = format!("#{}", i + 1);
            }
        }
        let v = self.video_hub.stats();
        let a = self.audio_hub.stats();
        ApiStats {
            capture: format!("{:?}", *self.capture_state.borrow()),
            video_frames_published: v.published,
            audio_packets_published: a.published,
            keyframe_requests_sent: v.keyframe_requests_sent,
            capture_to_rtp_latency: self.latency.summary(),
            time_to_first_frame: self.first_frame.summary(),
            start_to_first_frame_ms: self.first_frame_ms.get().copied(),
            capture_mode: self.capture_mode.clone(),
            rungs_withheld: *self.rungs_withheld.borrow(),
            rung_sheds: self.rung_sheds.load(Ordering::Relaxed),
            sessions,
            runtime_tasks: runtime_tasks(),
        }
    }

    /// What one `/metrics` scrape reports.
    pub fn metrics(&self) -> MetricsSnapshot {
        let view = self.view();
        let mut groups: BTreeMap<(&'static str, String), u64> = BTreeMap::new();
        for s in &view.sessions {
            let pair = s
                .candidate_pair
                .clone()
                .unwrap_or_else(|| "connecting".into());
            *groups.entry((s.frontend, pair)).or_default() += 1;
        }
        let v = self.video_hub.stats();
        let a = self.audio_hub.stats();
        let t = view.totals;
        MetricsSnapshot {
            video_frames_encoded: v.published,
            audio_packets_encoded: a.published,
            keyframe_requests_sent: v.keyframe_requests_sent,
            video_frames_sent: t.video_frames,
            audio_packets_sent: t.audio_packets,
            bytes_sent: t.bytes,
            frames_dropped: t.dropped_frames,
            viewer_keyframe_requests: t.keyframe_requests,
            nacked_packets: t.nacked,
            resent_packets: t.resent,
            refused_resends: t.refused_resends,
            rung_switches: t.rung_switches,
            bandwidth_probes: t.probes,
            rungs_withheld: u64::try_from(*self.rungs_withheld.borrow()).unwrap_or(u64::MAX),
            rung_sheds: self.rung_sheds.load(Ordering::Relaxed),
            latency_ms_buckets: self.latency.counts(),
            first_frame_10ms_buckets: self.first_frame.counts(),
            auth_refusals: self.refusals.snapshot(),
            viewers: groups
                .into_iter()
                .map(|((frontend, candidate_pair), count)| ViewerGroup {
                    frontend,
                    candidate_pair,
                    count,
                })
                .collect(),
            capture_running: *self.capture_state.borrow() == CaptureState::Running,
            capture_failures: self.capture_failures.load(Ordering::Relaxed),
            mqtt_connected: self.link.state() == LinkState::Connected,
            mqtt_connects: self.link.connects(),
            runtime_tasks: runtime_tasks(),
            snapshots_encoded: self.snapshots.encoded(),
            snapshots_served: self.snapshots.served(),
            talk_packets: self.talk.as_ref().map_or_else(Vec::new, |t| {
                let c = t.counters();
                vec![
                    ("played", c.played.load(Ordering::Relaxed)),
                    ("refused", c.refused.load(Ordering::Relaxed)),
                    ("dropped", c.dropped.load(Ordering::Relaxed)),
                ]
            }),
            talk_turns: self
                .talk
                .as_ref()
                .map_or(0, |t| t.counters().turns.load(Ordering::Relaxed)),
        }
    }
}

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
    /// Offer received → first video frame sent, per session (p50/p99/max, ms; 10 ms
    /// resolution).
    pub time_to_first_frame: LatencySummary,
    /// Start → first encoded frame, ms; `null` until then.
    pub start_to_first_frame_ms: Option<u64>,
    /// The V4L2 mode negotiated from the camera's offer (`kind`, `fourcc`, `width`,
    /// `height`, `fps` in Hz); `null` for the test pattern and libcamera.
    pub capture_mode: Option<CaptureMode>,
    /// How many of the ladder's lowest rungs are withheld now because the encoders
    /// could not keep up (0 or 1: the low H.264 rung); their viewers are on the main
    /// rung or its keyframes until it is offered again.
    pub rungs_withheld: usize,
    /// Times the low rung was withheld since start.
    pub rung_sheds: u64,
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
            time_to_first_frame: LatencySummary {
                count: 1,
                p50_ms: 260.0,
                p99_ms: 260.0,
                max_ms: 260.0,
            },
            start_to_first_frame_ms: None,
            capture_mode: None,
            rungs_withheld: 1,
            rung_sheds: 2,
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
                "rungSheds",
                "rungsWithheld",
                "runtimeTasks",
                "sessions",
                "startToFirstFrameMs",
                "timeToFirstFrame",
                "videoFramesPublished"
            ]
        );
        assert_eq!(doc["startToFirstFrameMs"], serde_json::Value::Null);
        assert_eq!(doc["captureToRtpLatency"]["p50_ms"], 1.0);
    }
}
