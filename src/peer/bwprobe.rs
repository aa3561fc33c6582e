//! Bandwidth probing: finding out whether a viewer's link carries a higher rung before
//! switching it there (sans-IO, time passed in).
//!
//! A viewer on a lower rung sends less than its link may carry, and a delay-based
//! estimator learns nothing about capacity it is not using: GCC's target climbs while
//! the link is underused whatever the link's size, so edgecam caps it near what is
//! acknowledged (as libwebrtc caps at 1.5 × the acknowledged rate) and learns the rest
//! by probing, as libwebrtc does (its `ProbeController` and `ProbeBitrateEstimator`):
//! for [`probe_duration`] the camera sends RTX padding (RFC 4588 retransmissions of
//! recent packets, which the browser discards as duplicates but reports in its TWCC
//! feedback) so that the whole transport runs at the rate to test, then measures from
//! the feedback what left and what arrived.
//!
//! Three parties share a [`ProbeLink`]: the feed asks for a probe, the retransmitter
//! (the interceptor owning the packet history and the RTX stream) sends the padding
//! and records its window, and the estimator measures each window with a
//! [`ProbeMeter`] and publishes the result.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a probe runs: at 3 Mbit/s about 30 kB, so that a token-bucket policer's
/// burst (15 kB on the test links) is spent within the first two thirds, whose arrivals
/// the meter ignores, while a failed probe on a 0.8 Mbit/s link queues only the last
/// few kB (about 75 ms). 200 ms probes, measured on that link, froze the picture about
/// 280 ms each; 60 ms probes rode the burst and measured a rate the link did not have.
pub const PROBE_DURATION: Duration = Duration::from_millis(80);
/// The least a probe sends, bytes: more than a policer's burst, so that a probe at a
/// rate near the link's does not pass whole within the burst (measured: an 80 ms probe
/// at 0.8 Mbit/s, 8 kB, "found" 718 kbit/s on a 0.6 Mbit/s link).
pub const MIN_PROBE_BYTES: f64 = 30_000.0;

/// How long a probe at `rate_bps` runs: [`PROBE_DURATION`], or longer at a low rate,
/// until it has sent [`MIN_PROBE_BYTES`].
pub fn probe_duration(rate_bps: f64) -> Duration {
    let for_bytes = MIN_PROBE_BYTES * 8.0 / rate_bps.max(1.0);
    PROBE_DURATION.max(Duration::from_secs_f64(for_bytes.min(1.0)))
}
/// The padding is released in steps this far apart.
pub const PROBE_STEP: Duration = Duration::from_millis(5);
/// Fewer packets than this in a window measure nothing.
pub const MIN_PACKETS: usize = 8;
/// A window whose feedback has not come this long after it ended is given up.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Loss above this share of a window's packets fails the probe.
pub const MAX_LOSS: f64 = 0.1;

/// A probe the feed asks for: the whole transport at `rate_bps` bits per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeRequest {
    /// Identifies the probe in its result.
    pub id: u32,
    /// Bits per second the transport (media, audio and padding) should reach.
    pub rate_bps: f64,
}

/// When a probe's padding went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeWindow {
    /// The request's id.
    pub id: u32,
    /// First padding packet's departure.
    pub start: Instant,
    /// Last padding packet's departure.
    pub end: Instant,
}

/// What a probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// The request's id.
    pub id: u32,
    /// What the link carried during the window, bits per second; 0 when the probe
    /// failed (too much loss, or no feedback).
    pub bps: f64,
}

#[derive(Debug, Default)]
struct LinkState {
    /// The viewer negotiated RTX and TWCC, so padding can be sent and measured.
    can_probe: bool,
    request: Option<ProbeRequest>,
    windows: VecDeque<ProbeWindow>,
}

/// A session's probing rendezvous (see the module documentation).
#[derive(Debug)]
pub struct ProbeLink {
    state: Mutex<LinkState>,
    results: watch::Sender<Option<ProbeResult>>,
}

impl Default for ProbeLink {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            results: watch::channel(None).0,
        }
    }
}

impl ProbeLink {
    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether probes can be sent and measured (the viewer negotiated RTX and TWCC for
    /// the video stream).
    pub fn can_probe(&self) -> bool {
        self.state().can_probe
    }

    /// Set by the retransmitter when the video stream is bound (or unbound).
    pub fn set_can_probe(&self, can: bool) {
        self.state().can_probe = can;
    }

    /// The feed asks for a probe; replaces one not yet started.
    pub fn request(&self, request: ProbeRequest) {
        self.state().request = Some(request);
    }

    /// The retransmitter takes the pending request.
    pub fn take_request(&self) -> Option<ProbeRequest> {
        self.state().request.take()
    }

    /// The retransmitter reports a finished window.
    pub fn window_sent(&self, window: ProbeWindow) {
        let mut s = self.state();
        // Bounded: a meter that never drains (no TWCC) keeps the newest few.
        if s.windows.len() >= 4 {
            s.windows.pop_front();
        }
        s.windows.push_back(window);
    }

    /// The estimator takes the windows sent since it last looked.
    pub fn take_windows(&self) -> Vec<ProbeWindow> {
        self.state().windows.drain(..).collect()
    }

    /// The estimator publishes a result.
    pub fn publish(&self, result: ProbeResult) {
        self.results.send_replace(Some(result));
    }

    /// The feed's view of the results.
    pub fn results(&self) -> watch::Receiver<Option<ProbeResult>> {
        self.results.subscribe()
    }
}

/// Paces one probe's padding: how many bytes may have left by each instant.
#[derive(Debug, Clone)]
pub struct ProbePacer {
    request: ProbeRequest,
    start: Instant,
    /// Bits per second the padding adds to what the media already sends.
    padding_bps: f64,
    sent_bytes: usize,
    last_sent: Option<Instant>,
}

impl ProbePacer {
    /// Starts `request` at `now`, with the media already sending `media_bps`.
    pub fn new(now: Instant, request: ProbeRequest, media_bps: f64) -> Self {
        Self {
            request,
            start: now,
            padding_bps: (request.rate_bps - media_bps).max(0.0),
            sent_bytes: 0,
            last_sent: None,
        }
    }

    /// Bytes of padding that may leave at `now` (0 once the probe is over).
    pub fn allowance(&self, now: Instant) -> usize {
        if self.is_over(now) {
            return 0;
        }
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        // One step ahead, so the first step sends at once.
        let due = self.padding_bps / 8.0 * (elapsed + PROBE_STEP.as_secs_f64());
        (due as usize).saturating_sub(self.sent_bytes)
    }

    /// Records `bytes` of padding sent at `now`.
    pub fn sent(&mut self, now: Instant, bytes: usize) {
        self.sent_bytes += bytes;
        self.last_sent = Some(now);
    }

    /// Whether the probe's time is up at `now`.
    pub fn is_over(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= probe_duration(self.request.rate_bps)
    }

    /// When to wake next.
    pub fn next_wake(&self, now: Instant) -> Instant {
        (now + PROBE_STEP).min(self.start + probe_duration(self.request.rate_bps))
    }

    /// The window the padding went out in, once over (`None` if nothing was sent).
    pub fn window(&self) -> Option<ProbeWindow> {
        self.last_sent.map(|end| ProbeWindow {
            id: self.request.id,
            start: self.start,
            end,
        })
    }
}

/// One packet's fate, as the meter needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fate {
    /// When it left the camera.
    pub departure: Instant,
    /// When it arrived, on the viewer's clock; `None` if lost.
    pub arrival: Option<Duration>,
    /// Bytes on the wire.
    pub size: usize,
}

/// Reported packets kept for windows whose feedback came before the window was
/// reported finished: at most this many, and none departed more than
/// [`RESULT_TIMEOUT`] before the newest.
const KEPT_FATES: usize = 4096;

/// Measures probe windows from transport feedback. Pure; instants are parameters.
#[derive(Debug, Default)]
pub struct ProbeMeter {
    pending: Vec<ProbeWindow>,
    /// Recent reports, in the order they came.
    fates: VecDeque<Fate>,
}

impl ProbeMeter {
    /// Starts measuring `window` (whose feedback may have come in part already).
    pub fn add_window(&mut self, window: ProbeWindow) {
        if self.pending.len() < 4 {
            self.pending.push(window);
        }
    }

    /// Takes reported packets; returns the results of the windows now complete (a
    /// packet that departed after the window has been reported), or timed out at `now`.
    pub fn on_fates(&mut self, now: Instant, fates: &[Fate]) -> Vec<ProbeResult> {
        self.fates.extend(fates.iter().copied());
        if let Some(newest) = self.fates.iter().map(|f| f.departure).max() {
            while self.fates.len() > KEPT_FATES
                || self
                    .fates
                    .front()
                    .is_some_and(|f| newest.saturating_duration_since(f.departure) > RESULT_TIMEOUT)
            {
                self.fates.pop_front();
            }
        }
        let mut results = Vec::new();
        let kept = &self.fates;
        self.pending.retain(|w| {
            let complete = kept.iter().any(|f| f.departure > w.end);
            let timed_out = now.saturating_duration_since(w.end) > RESULT_TIMEOUT;
            if complete {
                let inside: Vec<Fate> = kept
                    .iter()
                    .filter(|f| f.departure >= w.start && f.departure <= w.end)
                    .copied()
                    .collect();
                results.push(ProbeResult {
                    id: w.id,
                    bps: measure(&inside),
                });
                false
            } else if timed_out {
                results.push(ProbeResult { id: w.id, bps: 0.0 });
                false
            } else {
                true
            }
        });
        results
    }
}

/// The rate a window's packets show: the lower of the rate they left at and the rate
/// the last third of them arrived at (the first two thirds may have ridden a policer's
/// burst), reduced by their loss; 0 when loss exceeds [`MAX_LOSS`] or there are too
/// few packets to say.
pub fn measure(fates: &[Fate]) -> f64 {
    if fates.len() < MIN_PACKETS {
        return 0.0;
    }
    let mut by_departure = fates.to_vec();
    by_departure.sort_by_key(|f| f.departure);
    let lost = by_departure.iter().filter(|f| f.arrival.is_none()).count();
    let loss = lost as f64 / by_departure.len() as f64;
    if loss > MAX_LOSS {
        return 0.0;
    }
    let (first, last) = (by_departure[0], by_departure[by_departure.len() - 1]);
    let send_span = last.departure.saturating_duration_since(first.departure);
    let send_bytes: usize = by_departure[..by_departure.len() - 1]
        .iter()
        .map(|f| f.size)
        .sum();
    if send_span < PROBE_STEP {
        return 0.0;
    }
    let send_bps = send_bytes as f64 * 8.0 / send_span.as_secs_f64();
    let mut tail: Vec<(Duration, usize)> = by_departure[by_departure.len() * 2 / 3..]
        .iter()
        .filter_map(|f| f.arrival.map(|a| (a, f.size)))
        .collect();
    tail.sort_by_key(|&(a, _)| a);
    let (Some(&(a0, _)), Some(&(a1, _))) = (tail.first(), tail.last()) else {
        return 0.0;
    };
    let recv_span = a1.saturating_sub(a0);
    let recv_bytes: usize = tail[1..].iter().map(|&(_, s)| s).sum();
    // Arrivals closer than a millisecond say nothing about the link's rate.
    let recv_bps = if recv_span < Duration::from_millis(1) {
        send_bps
    } else {
        recv_bytes as f64 * 8.0 / recv_span.as_secs_f64()
    };
    send_bps.min(recv_bps) * (1.0 - loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// `n` packets of `size` bytes leaving every `gap_us` µs from `t0`; each arrives
    /// when a link of `link_bps` (after a `burst_bytes` token bucket) lets it.
    fn through_link(
        t0: Instant,
        n: usize,
        size: usize,
        gap_us: u64,
        link_bps: f64,
        burst_bytes: f64,
    ) -> Vec<Fate> {
        let mut tokens = burst_bytes;
        let mut link_free = 0.0f64; // seconds
        let mut last = 0.0f64;
        (0..n)
            .map(|i| {
                let dep = i as f64 * gap_us as f64 / 1e6;
                tokens = (tokens + (dep - last) * link_bps / 8.0).min(burst_bytes);
                last = dep;
                let arrival = if tokens >= size as f64 {
                    tokens -= size as f64;
                    dep.max(link_free)
                } else {
                    let start = dep.max(link_free);
                    link_free = start + size as f64 * 8.0 / link_bps;
                    link_free
                };
                Fate {
                    departure: t0 + Duration::from_micros(i as u64 * gap_us),
                    arrival: Some(Duration::from_secs_f64(0.030 + arrival)),
                    size,
                }
            })
            .collect()
    }

    #[test]
    fn a_free_link_measures_the_rate_sent() {
        // 3 Mbit/s: 1200-byte packets every 3.2 ms, on a 10 Mbit/s link.
        let fates = through_link(Instant::now(), 25, 1200, 3200, 10e6, 15_000.0);
        let bps = measure(&fates);
        assert!((2.8e6..3.1e6).contains(&bps), "{bps}");
    }

    #[test]
    fn a_policed_link_measures_the_policer_not_its_burst() {
        // The same probe into 0.8 Mbit/s behind a 15 kB bucket: the first 15 kB pass
        // at once, the rest at 0.8 Mbit/s.
        let fates = through_link(Instant::now(), 25, 1200, 3200, 0.8e6, 15_000.0);
        let bps = measure(&fates);
        assert!(bps < 1.2e6, "{bps}");
    }

    #[test]
    fn loss_fails_a_probe_and_few_packets_say_nothing() {
        let t0 = Instant::now();
        let mut fates = through_link(t0, 40, 1200, 3200, 10e6, 15_000.0);
        for f in fates.iter_mut().step_by(5) {
            f.arrival = None;
        }
        assert_eq!(measure(&fates), 0.0, "20 % lost");
        assert_eq!(measure(&fates[..5]), 0.0, "5 packets");
    }

    #[test]
    fn the_meter_reports_once_feedback_passes_the_window_or_times_out() {
        let t0 = Instant::now();
        let fates = through_link(t0, 60, 1200, 3200, 10e6, 15_000.0);
        let mut meter = ProbeMeter::default();
        // Feedback on the window's first half comes before the window is reported.
        assert!(meter.on_fates(t0 + MS(150), &fates[..30]).is_empty());
        meter.add_window(ProbeWindow {
            id: 7,
            start: t0,
            end: fates[59].departure,
        });
        assert!(meter.on_fates(t0 + MS(250), &fates[30..]).is_empty());
        let after = Fate {
            departure: t0 + MS(300),
            arrival: None,
            size: 100,
        };
        let results = meter.on_fates(t0 + MS(350), &[after]);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].id, 7);
        assert!(results[0].bps > 2.5e6, "{:?}", results[0]);

        meter.add_window(ProbeWindow {
            id: 8,
            start: t0 + MS(400),
            end: t0 + MS(600),
        });
        assert!(meter.on_fates(t0 + MS(700), &[]).is_empty());
        let results = meter.on_fates(t0 + MS(2700), &[]);
        assert_eq!(
            results,
            vec![ProbeResult { id: 8, bps: 0.0 }],
            "no feedback"
        );
    }

    #[test]
    fn the_pacer_spreads_the_padding_over_the_window() {
        let t0 = Instant::now();
        let request = ProbeRequest {
            id: 1,
            rate_bps: 3_000_000.0,
        };
        // Media already sends 1 Mbit/s: padding adds 2 Mbit/s = 250 bytes per ms.
        let mut pacer = ProbePacer::new(t0, request, 1_000_000.0);
        let mut now = t0;
        let mut total = 0;
        while !pacer.is_over(now) {
            let mut allowance = pacer.allowance(now);
            while allowance > 0 {
                let size = allowance.min(1200);
                pacer.sent(now, size);
                total += size;
                allowance = pacer.allowance(now);
            }
            now = pacer.next_wake(now);
        }
        assert_eq!(pacer.allowance(now), 0);
        // 80 ms at 250 bytes/ms, give or take the step ahead.
        assert!((19_000..=22_000).contains(&total), "{total}");
        let w = pacer.window().unwrap();
        assert_eq!((w.id, w.start), (1, t0));
        assert!(w.end < t0 + PROBE_DURATION);
        // A slow probe runs until it has sent 30 kB.
        assert_eq!(probe_duration(3_000_000.0), PROBE_DURATION);
        assert_eq!(probe_duration(800_000.0), Duration::from_millis(300));
    }
}
