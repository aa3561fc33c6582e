//! What a viewer gets when its link cannot carry even the lowest rung (sans-IO, time
//! passed in).
//!
//! Sending a rung faster than the link drains it fills the bottleneck's queue until it
//! drops packets; every frame after a loss is undecodable until the next IDR, and the
//! resends and keyframe requests that follow add to the overload (measured at
//! 0.6 Mbit/s with a 500 kbit/s rung: freezes of 6 to 9 s). An H.264 rung encoded once
//! for many viewers has no frames one viewer can skip alone, except whole groups of
//! pictures, so [`FrameBudget`] degrades the way the frame rate can drop without
//! breaking the picture: it keeps a token bucket at the viewer's video budget and,
//! once the viewer is more than [`MAX_DEBT`] of its budget behind, sends keyframes only,
//! each when the budget has room for it, asking for the next one as soon as there is
//! room (at most one request per [`KEYFRAME_EVERY`]). Latency stays bounded because
//! nothing is queued beyond the budget; the frame rate drops to what the link carries.
//!
//! The budget is set while the viewer's rung chooser (`peer::adapt`) holds it below the
//! lowest rung; once the chooser lifts it (a probe, or the estimate, showed the rung
//! fits) there is no budget, and every frame is sent again from the next keyframe.

use std::time::{Duration, Instant};

/// How far behind its budget (in time at the budget's rate) a viewer may fall before
/// only keyframes are sent. An IDR of the 640x360 rung is 4–8 times a P-frame; this
/// lets one through at 0.3 Mbit/s without falling back.
pub const MAX_DEBT: Duration = Duration::from_millis(800);
/// The shortest time between two keyframe requests of one viewer (they go to an
/// encoder other viewers share, and every IDR costs them bits too).
pub const KEYFRAME_EVERY: Duration = Duration::from_millis(500);

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Drop it; `request_keyframe` asks the rung for an IDR now.
    Drop {
        /// Ask the rung's encoder for an IDR.
        request_keyframe: bool,
    },
}

/// One viewer's video budget. Pure; every instant is a parameter.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    rate_bps: f64,
    /// Bits the viewer may still send; negative = behind.
    tokens: f64,
    refilled: Option<Instant>,
    keyframes_only: bool,
    last_request: Option<Instant>,
}

impl Default for FrameBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBudget {
    /// A budget that sends everything until [`Self::set_rate`] gives it a finite rate.
    pub fn new() -> Self {
        Self {
            rate_bps: f64::INFINITY,
            tokens: 0.0,
            refilled: None,
            keyframes_only: false,
            last_request: None,
        }
    }

    /// Whether only keyframes are sent now.
    pub fn keyframes_only(&self) -> bool {
        self.keyframes_only
    }

    /// The viewer's video budget from `now`, payload bits per second, or
    /// `f64::INFINITY` for none.
    pub fn set_rate(&mut self, now: Instant, rate_bps: f64) {
        self.refill(now);
        if rate_bps.is_finite() && !self.rate_bps.is_finite() {
            self.tokens = 0.0;
        }
        self.rate_bps = rate_bps;
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.refilled
            && self.rate_bps.is_finite()
        {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            // Never more than a frame's worth ahead: a quiet spell earns no burst.
            self.tokens = (self.tokens + elapsed * self.rate_bps).min(self.rate_bps / 30.0);
        }
        self.refilled = Some(now);
    }

    /// Decides for a frame of `bytes` at `now` (`keyframe`: an IDR).
    pub fn offer(&mut self, now: Instant, bytes: usize, keyframe: bool) -> Verdict {
        self.refill(now);
        let bits = bytes as f64 * 8.0;
        let limited = self.rate_bps.is_finite();
        if !self.keyframes_only {
            if !limited || self.tokens - bits >= -self.rate_bps * MAX_DEBT.as_secs_f64() {
                self.tokens -= bits;
                return Verdict::Send;
            }
            // The debt is gone: the link has queued or dropped it already. Starting
            // level lets the first IDR be asked for at once.
            self.keyframes_only = true;
            self.tokens = 0.0;
        }
        let room = !limited || self.tokens >= 0.0;
        if keyframe && room {
            self.keyframes_only = limited;
            if limited {
                self.tokens -= bits;
            }
            return Verdict::Send;
        }
        let request = room
            && self
                .last_request
                .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_EVERY);
        if request {
            self.last_request = Some(now);
        }
        Verdict::Drop {
            request_keyframe: request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// 30 fps for `secs` from `t0 + from_ms`: an IDR of `idr` bytes every 2 s (and on
    /// request, the next frame), P-frames of `p` bytes. Returns (frames sent, keyframes
    /// sent, requests).
    fn run(
        b: &mut FrameBudget,
        t0: Instant,
        from_ms: u64,
        secs: u64,
        (idr, p): (usize, usize),
    ) -> (u32, u32, u32) {
        let (mut sent, mut keys, mut requests) = (0, 0, 0);
        let mut requested = false;
        for i in 0..secs * 30 {
            let at = t0 + MS(from_ms + i * 1000 / 30);
            let key = i % 60 == 0 || requested;
            requested = false;
            match b.offer(at, if key { idr } else { p }, key) {
                Verdict::Send => {
                    sent += 1;
                    keys += u32::from(key);
                }
                Verdict::Drop { request_keyframe } => {
                    requests += u32::from(request_keyframe);
                    requested = request_keyframe;
                }
            }
        }
        (sent, keys, requests)
    }

    #[test]
    fn without_a_rate_or_within_it_every_frame_goes() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new();
        assert_eq!(run(&mut b, t0, 0, 4, (20_000, 2_000)).0, 120);
        // 500 kbit/s rung (IDR 20 kB, P 1.8 kB ≈ 0.5 Mbit/s) in a 0.6 Mbit/s budget.
        b.set_rate(t0 + MS(4000), 600_000.0);
        assert_eq!(run(&mut b, t0, 4000, 10, (20_000, 1_800)), (300, 5, 0));
        assert!(!b.keyframes_only());
    }

    #[test]
    fn an_overloaded_viewer_gets_keyframes_as_the_budget_allows() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new();
        // The same rung into a 0.3 Mbit/s budget.
        b.set_rate(t0, 300_000.0);
        let (sent, keys, requests) = run(&mut b, t0, 0, 20, (20_000, 1_800));
        assert!(b.keyframes_only());
        // 20 s at 0.3 Mbit/s = 750 kB: about 35 IDRs of 20 kB, after a first run.
        assert!(sent < 200, "{sent}");
        assert!(keys >= 15, "{keys} keyframes");
        assert!(requests >= 10, "{requests} requests");
        // Requests at most every 500 ms.
        assert!(requests <= 40, "{requests}");
    }

    #[test]
    fn lifted_it_sends_every_frame_again_from_a_keyframe() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new();
        b.set_rate(t0, 300_000.0);
        run(&mut b, t0, 0, 10, (20_000, 1_800));
        assert!(b.keyframes_only());
        // Lifted: nothing until a keyframe, which is asked for, then every frame.
        b.set_rate(t0 + MS(10_000), f64::INFINITY);
        assert_eq!(
            b.offer(t0 + MS(10_001), 1_800, false),
            Verdict::Drop {
                request_keyframe: true
            }
        );
        assert_eq!(b.offer(t0 + MS(10_034), 20_000, true), Verdict::Send);
        assert!(!b.keyframes_only());
        let (sent, _, _) = run(&mut b, t0, 10_067, 2, (20_000, 1_800));
        assert_eq!(sent, 60);
        assert_eq!(b.offer(t0 + MS(14_001), 1_000_000, false), Verdict::Send);
    }
}
