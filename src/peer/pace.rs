//! Packet pacing of one viewer's video (sans-IO, time passed in).
//!
//! An IDR is 5 to 10 times a P-frame; written at once, its packets meet the viewer's
//! bottleneck at line rate, overflow a shallow queue and are lost together, which costs
//! the picture until the next IDR. libwebrtc's pacer releases packets at a multiple of
//! the bandwidth estimate (its pacing factor, 2.5); [`Pacer`] does the same per viewer:
//! a token bucket at [`PACING_FACTOR`] × the estimate, [`BURST`] deep, that says how
//! long to wait before each packet. A P-frame of a rung the estimate covers fits in the
//! burst and leaves at once; only IDRs (and frames of a rung above the estimate) are
//! spread out, by a few tens of milliseconds. (`rtc`'s own pacer paces at exactly the
//! estimate, which would hold every stream to a start value far below the main rung.)

use std::time::{Duration, Instant};

/// Packets leave at up to this multiple of the bandwidth estimate.
pub const PACING_FACTOR: f64 = 2.5;
/// What may leave at once, as time at the pacing rate.
pub const BURST: Duration = Duration::from_millis(15);
/// The burst is never smaller than this, bytes (a few full packets).
pub const MIN_BURST_BYTES: f64 = 4_000.0;
/// No packet waits longer than this behind the ones before it; a frame that would
/// take longer is sent faster rather than later.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// One viewer's pacer. Pure; every instant is a parameter.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bytes_per_s: f64,
    /// Bytes that may leave now; negative: the time until the next may leave, in bytes.
    tokens: f64,
    refilled: Option<Instant>,
}

impl Pacer {
    /// A pacer for an estimate of `estimate_bps` bits per second.
    pub fn new(estimate_bps: f64) -> Self {
        let mut p = Self {
            rate_bytes_per_s: 0.0,
            tokens: 0.0,
            refilled: None,
        };
        p.set_estimate(estimate_bps);
        p.tokens = p.depth();
        p
    }

    /// A new bandwidth estimate, bits per second.
    pub fn set_estimate(&mut self, estimate_bps: f64) {
        self.rate_bytes_per_s = (estimate_bps * PACING_FACTOR / 8.0).max(1.0);
        self.tokens = self.tokens.min(self.depth());
    }

    fn depth(&self) -> f64 {
        (self.rate_bytes_per_s * BURST.as_secs_f64()).max(MIN_BURST_BYTES)
    }

    /// How long the packet of `bytes` must wait at `now` before it leaves (zero: now).
    /// The packet counts as sent once that wait is over.
    pub fn wait(&mut self, now: Instant, bytes: usize) -> Duration {
        if let Some(at) = self.refilled {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate_bytes_per_s).min(self.depth());
        }
        self.refilled = Some(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64(-self.tokens / self.rate_bytes_per_s);
        if wait > MAX_WAIT {
            // Behind by more than the cap: forget the excess rather than add latency.
            self.tokens = -(self.rate_bytes_per_s * MAX_WAIT.as_secs_f64());
            return MAX_WAIT;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Sends `n` packets of `size` at `t`, each after its wait; returns when the last left.
    fn send(p: &mut Pacer, mut t: Instant, n: usize, size: usize) -> Instant {
        for _ in 0..n {
            t += p.wait(t, size);
        }
        t
    }

    #[test]
    fn p_frames_leave_at_once_and_an_idr_is_spread() {
        let t0 = Instant::now();
        // 2.54 Mbit/s estimate: 794 kB/s pacing, 11.9 kB burst.
        let mut p = Pacer::new(2_540_000.0);
        // A 7 kB P-frame: at once.
        assert_eq!(send(&mut p, t0, 6, 1200), t0);
        // 33 ms later a 36 kB IDR: the burst, then the rest at 794 kB/s, about 30 ms.
        let t1 = t0 + MS(33);
        let done = send(&mut p, t1, 30, 1200);
        let spread = done - t1;
        assert!((MS(28)..MS(36)).contains(&spread), "{spread:?}");
    }

    #[test]
    fn a_small_estimate_spreads_more_but_never_waits_past_the_cap() {
        let t0 = Instant::now();
        // 0.8 Mbit/s: 250 kB/s; a 20 kB IDR takes about 64 ms after its 4 kB burst.
        let mut p = Pacer::new(800_000.0);
        let spread = send(&mut p, t0, 17, 1200) - t0;
        assert!((MS(60)..MS(70)).contains(&spread), "{spread:?}");
        // 100 kB at once: no packet waits past 100 ms.
        let mut p = Pacer::new(800_000.0);
        let t1 = t0 + MS(1000);
        let mut worst = Duration::ZERO;
        for _ in 0..80 {
            worst = worst.max(p.wait(t1, 1200));
        }
        assert_eq!(worst, MAX_WAIT);
    }
}
