//! Prometheus metrics: the one module that speaks `prometheus-client`. The camera
//! gathers a [`MetricsSnapshot`] of plain numbers at each scrape (counters it already
//! keeps, hub and session stats, link and capture state); [`render`] encodes it in the
//! OpenMetrics text format (served at `GET /metrics`, `web`).
//!
//! Names follow the Prometheus conventions: `edgecam_` prefix, base units (seconds,
//! bytes), `_total` on counters (added by the encoder).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the capture → RTP send latency histogram's buckets, ms.
const LATENCY_BOUNDS_MS: [u64; 10] = [1, 2, 5, 10, 20, 35, 50, 100, 200, 500];

/// Upper bounds of the time-to-first-frame histogram's buckets, ms.
const FIRST_FRAME_BOUNDS_MS: [u64; 10] = [100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000];

/// Open sessions of one kind, for the `edgecam_viewers` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerGroup {
    /// Signaling front-end: `mqtt` or `whep`.
    pub frontend: &'static str,
    /// Selected ICE candidate pair as local/remote candidate type and protocol, e.g.
    /// `host/host udp`, `relay/srflx udp`; `connecting` before one is selected.
    pub candidate_pair: String,
    /// Sessions in this group.
    pub count: u64,
}

/// What one scrape reports. Counters are totals since this camera started (a reload
/// starts them again, which Prometheus's `rate()` handles as a counter reset).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// H.264 access units the encoder delivered.
    pub video_frames_encoded: u64,
    /// Opus packets the encoder delivered.
    pub audio_packets_encoded: u64,
    /// Keyframe requests sent to the encoder after coalescing.
    pub keyframe_requests_sent: u64,
    /// Video frames written to viewers, all sessions (ended ones included).
    pub video_frames_sent: u64,
    /// Audio packets written to viewers, all sessions.
    pub audio_packets_sent: u64,
    /// RTP payload bytes written to viewers, all sessions.
    pub bytes_sent: u64,
    /// Frames dropped for slow viewers (a full queue), all sessions.
    pub frames_dropped: u64,
    /// PLI/FIR requests received from viewers, all sessions.
    pub viewer_keyframe_requests: u64,
    /// Packets viewers' NACKs named, all sessions.
    pub nacked_packets: u64,
    /// Packets resent for NACKs, all sessions.
    pub resent_packets: u64,
    /// NACKed packets not resent (too old, too often, over the budget), all sessions.
    pub refused_resends: u64,
    /// Switches between rungs of the ladder, all sessions.
    pub rung_switches: u64,
    /// Bandwidth probes measured, all sessions.
    pub bandwidth_probes: u64,
    /// Rungs withheld now because the encoders cannot keep up.
    pub rungs_withheld: u64,
    /// Times the low rung was withheld since start.
    pub rung_sheds: u64,
    /// Capture → RTP send latency: samples per 1 ms bucket (`[i]` counts samples in
    /// `[i, i+1)` ms; the last bucket takes everything longer).
    pub latency_ms_buckets: Vec<u64>,
    /// Offer → first video frame sent, per session: samples per 10 ms bucket.
    pub first_frame_10ms_buckets: Vec<u64>,
    /// Refused requests: (front-end `mqtt`/`http`, reason, count).
    pub auth_refusals: Vec<(&'static str, &'static str, u64)>,
    /// Open sessions by front-end and candidate pair.
    pub viewers: Vec<ViewerGroup>,
    /// Whether capture is delivering frames now.
    pub capture_running: bool,
    /// Capture runs that ended in failure (errors and stalls), each restarted.
    pub capture_failures: u64,
    /// Whether the MQTT link to the broker is up.
    pub mqtt_connected: bool,
    /// Successful MQTT connections (the first one and every reconnect).
    pub mqtt_connects: u64,
    /// Tasks alive on the async runtime.
    pub runtime_tasks: Option<u64>,
    /// JPEGs the snapshot branch encoded (it runs only while a snapshot is wanted).
    pub snapshots_encoded: u64,
    /// Snapshots served, from the cache or freshly encoded.
    pub snapshots_served: u64,
    /// Talk-back audio packets from viewers by outcome (`played`, `refused`: another
    /// viewer held the floor, `dropped`: queue full, oversized or playback failed);
    /// empty without `[audio] playback_device`.
    pub talk_packets: Vec<(&'static str, u64)>,
    /// Times a viewer took the talk-back floor.
    pub talk_turns: u64,
}

#[derive(Debug)]
struct Scrape(MetricsSnapshot);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, MetricType::Counter)?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let bytes = Some(&Unit::Bytes);
        counter(
            &mut e,
            "video_frames_encoded",
            "H.264 access units the encoder delivered",
            None,
            s.video_frames_encoded,
        )?;
        counter(
            &mut e,
            "audio_packets_encoded",
            "Opus packets the encoder delivered",
            None,
            s.audio_packets_encoded,
        )?;
        counter(
            &mut e,
            "encoder_keyframe_requests",
            "keyframe requests sent to the encoder after coalescing",
            None,
            s.keyframe_requests_sent,
        )?;
        counter(
            &mut e,
            "video_frames_sent",
            "video frames written to viewers",
            None,
            s.video_frames_sent,
        )?;
        counter(
            &mut e,
            "audio_packets_sent",
            "audio packets written to viewers",
            None,
            s.audio_packets_sent,
        )?;
        counter(
            &mut e,
            "sent",
            "RTP payload bytes written to viewers",
            bytes,
            s.bytes_sent,
        )?;
        counter(
            &mut e,
            "video_frames_dropped",
            "video frames dropped for slow viewers",
            None,
            s.frames_dropped,
        )?;
        counter(
            &mut e,
            "viewer_keyframe_requests",
            "PLI/FIR requests received from viewers",
            None,
            s.viewer_keyframe_requests,
        )?;
        counter(
            &mut e,
            "nacked_packets",
            "packets viewers' NACKs named",
            None,
            s.nacked_packets,
        )?;
        counter(
            &mut e,
            "resent_packets",
            "packets resent for NACKs (RFC 4585), within each viewer's budget",
            None,
            s.resent_packets,
        )?;
        counter(
            &mut e,
            "refused_resends",
            "NACKed packets not resent: too old, too often or over the viewer's budget",
            None,
            s.refused_resends,
        )?;
        counter(
            &mut e,
            "rung_switches",
            "viewers switched between rungs of the ladder by their bandwidth estimate",
            None,
            s.rung_switches,
        )?;
        counter(
            &mut e,
            "bandwidth_probes",
            "bandwidth probes (RTX padding at the next rung's rate) measured for viewers on a lower rung",
            None,
            s.bandwidth_probes,
        )?;
        counter(
            &mut e,
            "rung_sheds",
            "times the low rung was withheld because the encoders could not keep up",
            None,
            s.rung_sheds,
        )?;
        counter(
            &mut e,
            "capture_failures",
            "capture runs that ended in an error or a stall",
            None,
            s.capture_failures,
        )?;
        counter(
            &mut e,
            "mqtt_connects",
            "successful connections to the MQTT broker",
            None,
            s.mqtt_connects,
        )?;
        counter(
            &mut e,
            "snapshots_encoded",
            "JPEGs the snapshot branch encoded",
            None,
            s.snapshots_encoded,
        )?;
        counter(
            &mut e,
            "snapshots_served",
            "snapshots served (cached or fresh)",
            None,
            s.snapshots_served,
        )?;
        gauge(
            &mut e,
            "capture_running",
            "1 while capture delivers frames",
            i64::from(s.capture_running),
        )?;
        gauge(
            &mut e,
            "rungs_withheld",
            "rungs of the ladder withheld now because the encoders cannot keep up",
            i64::try_from(s.rungs_withheld).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut e,
            "mqtt_connected",
            "1 while the MQTT link is up",
            i64::from(s.mqtt_connected),
        )?;
        if let Some(tasks) = s.runtime_tasks {
            gauge(
                &mut e,
                "runtime_tasks",
                "tasks alive on the async runtime",
                i64::try_from(tasks).unwrap_or(i64::MAX),
            )?;
        }
        {
            let mut family = e.encode_descriptor(
                "viewers",
                "open viewer sessions by signaling front-end and ICE candidate pair",
                None,
                MetricType::Gauge,
            )?;
            for g in &s.viewers {
                let labels = [
                    ("frontend", g.frontend.to_owned()),
                    ("candidate_pair", g.candidate_pair.clone()),
                ];
                let metric = ConstGauge::new(i64::try_from(g.count).unwrap_or(i64::MAX));
                metric.encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "auth_refusals",
                "requests refused for want of a valid invitation, by front-end and reason",
                None,
                MetricType::Counter,
            )?;
            for &(frontend, reason, n) in &s.auth_refusals {
                let labels = [("frontend", frontend), ("reason", reason)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        if !s.talk_packets.is_empty() {
            {
                let mut family = e.encode_descriptor(
                    "talk_packets",
                    "talk-back audio packets received from viewers, by outcome",
                    None,
                    MetricType::Counter,
                )?;
                for &(outcome, n) in &s.talk_packets {
                    ConstCounter::new(n).encode(family.encode_family(&[("outcome", outcome)])?)?;
                }
            }
            counter(
                &mut e,
                "talk_turns",
                "times a viewer took the talk-back floor",
                None,
                s.talk_turns,
            )?;
        }
        let (sum, count, buckets) = latency_buckets(&s.latency_ms_buckets, 1, &LATENCY_BOUNDS_MS);
        e.encode_descriptor(
            "capture_to_rtp_latency",
            "capture timestamp to RTP send, per frame per viewer",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        let (sum, count, buckets) =
            latency_buckets(&s.first_frame_10ms_buckets, 10, &FIRST_FRAME_BOUNDS_MS);
        e.encode_descriptor(
            "time_to_first_frame",
            "offer received to first video frame sent, per session",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Regroups counts of `width_ms` buckets into `bounds` (ms, plus `+Inf`), in seconds:
/// `(sum, count, [(upper bound, samples in that bucket)])`. A sample in the bucket
/// `[i, i+1) × width_ms` counts at its upper edge, as the JSON summary does.
fn latency_buckets(counts: &[u64], width_ms: u64, bounds: &[u64]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out: Vec<(f64, u64)> = bounds
        .iter()
        .map(|&b| (b as f64 / 1000.0, 0))
        .chain(std::iter::once((f64::INFINITY, 0)))
        .collect();
    let (mut sum, mut count) = (0.0, 0);
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let upper_ms = (i + 1) as u64 * width_ms;
        let slot = bounds
            .iter()
            .position(|&b| upper_ms <= b)
            .unwrap_or(bounds.len());
        out[slot].1 += n;
        sum += upper_ms as f64 / 1000.0 * n as f64;
        count += n;
    }
    (sum, count, out)
}

/// Encodes `snapshot` in the OpenMetrics text format, ending with `# EOF`.
pub fn render(snapshot: MetricsSnapshot) -> String {
    let mut registry = Registry::with_prefix("edgecam");
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Writing into a String cannot fail; keep the scrape alive regardless.
        log::error!("encoding metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_samples_land_in_their_upper_bucket() {
        let mut ms = vec![0; 1000];
        ms[0] = 3; // [0, 1) ms → le 0.001
        ms[4] = 2; // [4, 5) ms → le 0.005
        ms[999] = 1; // beyond 500 ms → +Inf
        let (sum, count, b) = latency_buckets(&ms, 1, &LATENCY_BOUNDS_MS);
        assert_eq!(count, 6);
        assert!((sum - (0.003 + 0.010 + 1.0)).abs() < 1e-9, "{sum}");
        assert_eq!(b[0], (0.001, 3));
        assert_eq!(b[2], (0.005, 2));
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 1)));
        // 10 ms buckets: [250, 260) ms counts at 260 ms, in the le=0.3 s bucket.
        let mut tenths = vec![0; 1000];
        tenths[25] = 1;
        let (sum, count, b) = latency_buckets(&tenths, 10, &FIRST_FRAME_BOUNDS_MS);
        assert_eq!((count, b[2]), (1, (0.3, 1)));
        assert!((sum - 0.26).abs() < 1e-9);
    }

    #[test]
    fn renders_every_family_with_its_labels() {
        let text = render(MetricsSnapshot {
            video_frames_encoded: 42,
            bytes_sent: 1000,
            viewers: vec![ViewerGroup {
                frontend: "mqtt",
                candidate_pair: "host/udp".into(),
                count: 2,
            }],
            capture_running: true,
            latency_ms_buckets: vec![0, 5],
            auth_refusals: vec![("mqtt", "bad signature", 3)],
            runtime_tasks: Some(9),
            talk_packets: vec![("played", 50), ("refused", 7)],
            talk_turns: 2,
            resent_packets: 12,
            rung_switches: 3,
            bandwidth_probes: 4,
            rungs_withheld: 1,
            rung_sheds: 5,
            ..MetricsSnapshot::default()
        });
        for line in [
            "edgecam_talk_packets_total{outcome=\"played\"} 50",
            "edgecam_talk_packets_total{outcome=\"refused\"} 7",
            "edgecam_talk_turns_total 2",
            "edgecam_resent_packets_total 12",
            "edgecam_rung_switches_total 3",
            "edgecam_bandwidth_probes_total 4",
            "edgecam_rung_sheds_total 5",
            "edgecam_rungs_withheld 1",
            "edgecam_refused_resends_total 0",
            "edgecam_video_frames_encoded_total 42",
            "edgecam_sent_bytes_total 1000",
            "edgecam_viewers{frontend=\"mqtt\",candidate_pair=\"host/udp\"} 2",
            "edgecam_capture_running 1",
            "edgecam_mqtt_connected 0",
            "edgecam_runtime_tasks 9",
            "edgecam_auth_refusals_total{frontend=\"mqtt\",reason=\"bad signature\"} 3",
            "edgecam_capture_to_rtp_latency_seconds_bucket{le=\"0.002\"} 5",
            "edgecam_capture_to_rtp_latency_seconds_count 5",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Without a speaker there is no talk-back family at all.
        let quiet = render(MetricsSnapshot::default());
        assert!(!quiet.contains("talk"), "{quiet}");
    }
}
