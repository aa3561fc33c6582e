//! Per-process and per-session counters: frames and bytes sent, PLI/FIR received, the
//! capture→RTP-send latency histogram (1 ms buckets) and the time-to-first-frame
//! histogram (10 ms buckets), lock-free.

use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 1000;

/// Latency histogram of 1000 buckets of `width_ms` each (1 ms by default: 0 to 999 ms;
/// larger values land in the last).
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    width_ms: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::with_width_ms(1)
    }
}

/// Percentiles of a histogram, in ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest bucket seen, ms.
    pub max_ms: f64,
}

impl LatencyHistogram {
    /// A histogram of 1000 buckets `width_ms` wide (at least 1): it spans
    /// `1000 × width_ms` ms.
    pub fn with_width_ms(width_ms: u64) -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            width_ms: width_ms.max(1),
        }
    }

    /// Bucket width, ms.
    pub fn width_ms(&self) -> u64 {
        self.width_ms
    }

    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let i = usize::try_from(d.as_millis() / u128::from(self.width_ms))
            .unwrap_or(usize::MAX)
            .min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Samples per bucket: `[i]` counts those in `[i, i+1) × width_ms` ms, the last
    /// bucket everything longer.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// p50 / p99 / max (upper bucket edges, ms).
    pub fn summary(&self) -> LatencySummary {
        let counts = self.counts();
        let count: u64 = counts.iter().sum();
        let pct = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            let target = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target {
                    return ((i + 1) as u64 * self.width_ms) as f64;
                }
            }
            (BUCKETS as u64 * self.width_ms) as f64
        };
        let max_ms = counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0.0, |i| ((i + 1) as u64 * self.width_ms) as f64);
        LatencySummary {
            count,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms,
        }
    }
}

/// Counters of one viewer session.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Video frames written.
    pub video_frames: AtomicU64,
    /// Audio packets written.
    pub audio_packets: AtomicU64,
    /// RTP payload bytes written (both tracks).
    pub bytes: AtomicU64,
    /// PLI + FIR requests taken from the viewer (those arriving while one is still
    /// pending count once).
    pub keyframe_requests: AtomicU64,
    /// Frames lost to a full queue.
    pub dropped_frames: AtomicU64,
    /// Selected candidate pair, e.g. `host/udp` (filled once connected).
    pub candidate_pair: Mutex<Option<String>>,
    /// The video codec sent, `H264` or `VP8` (set once the offer is checked).
    pub video_codec: std::sync::OnceLock<&'static str>,
    /// The viewer's send-side bandwidth estimate (GCC), kbit/s; 0 before the first.
    pub estimate_kbps: AtomicU64,
    /// The rung sent now, e.g. `main 1280x720` or `low 640x360`.
    pub rung: Mutex<Option<String>>,
    /// Switches between rungs so far.
    pub rung_switches: AtomicU64,
    /// Bandwidth probes measured (`peer::bwprobe`).
    pub probes: AtomicU64,
    /// NACKed packets, resent and refused (`peer::retransmit`).
    pub resends: std::sync::Arc<crate::peer::retransmit::ResendCounters>,
}

/// The per-session counters summed over sessions (for totals that outlive sessions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTotals {
    /// Video frames written.
    pub video_frames: u64,
    /// Audio packets written.
    pub audio_packets: u64,
    /// RTP payload bytes written.
    pub bytes: u64,
    /// PLI + FIR requests taken from viewers.
    pub keyframe_requests: u64,
    /// Frames lost to full queues.
    pub dropped_frames: u64,
    /// Packets NACKed, resent, and not resent.
    pub nacked: u64,
    /// Packets resent.
    pub resent: u64,
    /// NACKed packets not resent.
    pub refused_resends: u64,
    /// Switches between rungs.
    pub rung_switches: u64,
    /// Bandwidth probes measured.
    pub probes: u64,
}

impl SessionTotals {
    /// Adds one session's counters.
    pub fn add(&mut self, s: &SessionStats) {
        self.video_frames += s.video_frames.load(Ordering::Relaxed);
        self.audio_packets += s.audio_packets.load(Ordering::Relaxed);
        self.bytes += s.bytes.load(Ordering::Relaxed);
        self.keyframe_requests += s.keyframe_requests.load(Ordering::Relaxed);
        self.dropped_frames += s.dropped_frames.load(Ordering::Relaxed);
        self.nacked += s.resends.nacked.load(Ordering::Relaxed);
        self.resent += s.resends.resent.load(Ordering::Relaxed);
        self.refused_resends += s.resends.refused();
        self.rung_switches += s.rung_switches.load(Ordering::Relaxed);
        self.probes += s.probes.load(Ordering::Relaxed);
    }
}

/// JSON view of one session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSnapshot {
    /// Session id.
    pub session: String,
    /// Video frames written.
    pub video_frames: u64,
    /// Audio packets written.
    pub audio_packets: u64,
    /// Bytes written.
    pub bytes: u64,
    /// PLI + FIR requests taken from the viewer (those arriving while one is still
    /// pending count once).
    pub keyframe_requests: u64,
    /// Frames dropped for this slow viewer.
    pub dropped_frames: u64,
    /// Selected candidate pair type.
    pub candidate_pair: Option<String>,
    /// Video codec sent: `H264` (the main rung) or `VP8` (the VP8 rung).
    pub video_codec: Option<&'static str>,
    /// Send-side bandwidth estimate (GCC over TWCC), kbit/s.
    pub estimate_kbps: u64,
    /// The rung sent now, e.g. `main 1280x720`.
    pub rung: Option<String>,
    /// Switches between rungs so far.
    pub rung_switches: u64,
    /// Bandwidth probes measured (RTX padding at the next rung's rate).
    pub probes: u64,
    /// Packets the viewer's NACKs named.
    pub nacked_packets: u64,
    /// Packets resent for them.
    pub resent_packets: u64,
    /// NACKed packets not resent (too old, too often, over the resend budget).
    pub refused_resends: u64,
    /// Signaling front-end: `mqtt` or `whep`.
    pub frontend: &'static str,
}

impl SessionStats {
    /// A JSON-able copy.
    pub fn snapshot(&self, session: &str) -> SessionSnapshot {
        SessionSnapshot {
            session: session.to_owned(),
            video_frames: self.video_frames.load(Ordering::Relaxed),
            audio_packets: self.audio_packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            dropped_frames: self.dropped_frames.load(Ordering::Relaxed),
            candidate_pair: self
                .candidate_pair
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            video_codec: self.video_codec.get().copied(),
            estimate_kbps: self.estimate_kbps.load(Ordering::Relaxed),
            rung: self.rung.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            rung_switches: self.rung_switches.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
            nacked_packets: self.resends.nacked.load(Ordering::Relaxed),
            resent_packets: self.resends.resent.load(Ordering::Relaxed),
            refused_resends: self.resends.refused(),
            frontend: "mqtt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bucket_edges() {
        let h = LatencyHistogram::default();
        assert_eq!(h.summary().count, 0);
        for ms in 0..100 {
            h.record(Duration::from_micros(ms * 1000 + 500));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        h.record(Duration::from_secs(5));
        assert_eq!(h.summary().max_ms, 1000.0);
        let wide = LatencyHistogram::with_width_ms(10);
        wide.record(Duration::from_millis(255));
        wide.record(Duration::from_secs(60));
        assert_eq!(wide.counts()[25], 1);
        let s = wide.summary();
        assert_eq!((s.p50_ms, s.max_ms), (260.0, 10_000.0));
    }
}
