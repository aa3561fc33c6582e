//! When to restart capture, sans-IO: capped exponential backoff (with jitter in
//! production), failures counted until a run lasts long enough to call healthy, and the
//! PTS offset that keeps timestamps continuous across restarts. Time is passed in.

use backon::BackoffBuilder as _;
use std::time::{Duration, Instant};

/// Gap left between the end of one run's last frame and the next run's first PTS, so
/// RTP timestamps stay strictly monotonic across a restart.
pub const RESTART_PTS_GAP: Duration = Duration::from_millis(100);

/// Restart policy settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    /// First retry delay.
    pub min_backoff: Duration,
    /// Retry delay cap.
    pub max_backoff: Duration,
    /// A run at least this long resets the backoff and the failure count.
    pub healthy_after: Duration,
    /// Randomise each delay (backon's jitter: up to one more delay); off in tests that
    /// check exact delays.
    pub jitter: bool,
}

/// What to do after a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Consecutive failures, this one included (1 after a healthy run).
    pub failures: u32,
    /// How long to wait before the next start.
    pub delay: Duration,
}

/// The restart state of one capture supervisor.
#[derive(Debug)]
pub struct RestartPolicy {
    cfg: RestartConfig,
    backoff: backon::ExponentialBackoff,
    failures: u32,
    pts_offset: Duration,
}

impl RestartPolicy {
    /// A policy for a capture that has not run yet (PTS offset 0).
    pub fn new(cfg: RestartConfig) -> Self {
        Self {
            backoff: Self::backoff(&cfg),
            cfg,
            failures: 0,
            pts_offset: Duration::ZERO,
        }
    }

    fn backoff(cfg: &RestartConfig) -> backon::ExponentialBackoff {
        let b = backon::ExponentialBuilder::default()
            .with_min_delay(cfg.min_backoff)
            .with_max_delay(cfg.max_backoff)
            .with_factor(2.0)
            .without_max_times();
        if cfg.jitter { b.with_jitter() } else { b }.build()
    }

    /// The PTS offset the next run starts at.
    pub fn pts_offset(&self) -> Duration {
        self.pts_offset
    }

    /// A run ended on purpose (a switch between the camera and the test pattern), its
    /// last frame ending at `end_pts`: the next run continues the timestamps without
    /// counting a failure.
    pub fn switched(&mut self, end_pts: Option<Duration>) {
        if let Some(end) = end_pts {
            self.pts_offset = self.pts_offset.max(end + RESTART_PTS_GAP);
        }
    }

    /// A run that started at `started` ended in failure at `now`, its last frame ending
    /// at `end_pts` (offset included; `None` when it never started). Returns the failure
    /// count and the delay before the next start.
    pub fn failed(&mut self, started: Instant, now: Instant, end_pts: Option<Duration>) -> Restart {
        if let Some(end) = end_pts {
            self.pts_offset = self.pts_offset.max(end + RESTART_PTS_GAP);
        }
        if now.saturating_duration_since(started) >= self.cfg.healthy_after {
            self.backoff = Self::backoff(&self.cfg);
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        Restart {
            failures: self.failures,
            delay: self.backoff.next().unwrap_or(self.cfg.max_backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RestartConfig {
        RestartConfig {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(30),
            jitter: false,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn quick_failures_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::new(cfg());
        let mut at = t0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            let r = p.failed(at, at + S(1), None);
            delays.push(r.delay.as_millis());
            at += S(1) + r.delay;
        }
        assert_eq!(
            delays,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        assert_eq!(p.failed(at, at + S(1), None).failures, 10);
    }

    #[test]
    fn a_healthy_run_resets_backoff_and_failure_count() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::new(cfg());
        for i in 0..4 {
            p.failed(t0 + S(i), t0 + S(i) + S(1), None);
        }
        let r = p.failed(t0 + S(10), t0 + S(10) + S(30), None);
        assert_eq!(
            r,
            Restart {
                failures: 1,
                delay: Duration::from_millis(500)
            }
        );
        // 29 s is not long enough to count as healthy.
        let r = p.failed(t0 + S(100), t0 + S(129), None);
        assert_eq!(
            r,
            Restart {
                failures: 2,
                delay: S(1)
            }
        );
    }

    #[test]
    fn pts_continues_after_the_last_frame_with_a_gap_and_never_goes_back() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::new(cfg());
        assert_eq!(p.pts_offset(), Duration::ZERO);
        p.failed(t0, t0 + S(5), Some(S(5)));
        assert_eq!(p.pts_offset(), S(5) + RESTART_PTS_GAP);
        // A run that failed before its first frame keeps the offset where it was.
        p.failed(t0 + S(6), t0 + S(6), None);
        assert_eq!(p.pts_offset(), S(5) + RESTART_PTS_GAP);
        p.failed(t0 + S(7), t0 + S(7), Some(S(5) + RESTART_PTS_GAP));
        assert_eq!(p.pts_offset(), S(5) + RESTART_PTS_GAP * 2);
        // A switch carries the timestamps on and is no failure.
        let before = p.failed(t0 + S(8), t0 + S(8), None).failures;
        p.switched(Some(S(20)));
        assert_eq!(p.pts_offset(), S(20) + RESTART_PTS_GAP);
        assert_eq!(p.failed(t0 + S(9), t0 + S(9), None).failures, before + 1);
    }

    #[test]
    fn jitter_stays_within_one_extra_delay() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::new(RestartConfig {
            jitter: true,
            ..cfg()
        });
        let d = p.failed(t0, t0, None).delay;
        assert!(d >= Duration::from_millis(500) && d <= S(1), "{d:?}");
    }
}
