//! A token bucket over time passed in (sans-IO): how floods of remote input are held to
//! a budget (signaling messages, data channel commands).

use std::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `per_sec` tokens per second; each
/// accepted event takes one.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    /// A full bucket of `capacity` tokens refilled at `per_sec` per second.
    pub fn new(capacity: u32, per_sec: f64) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_sec,
            tokens: f64::from(capacity),
            at: None,
        }
    }

    /// When a token was last asked for, if ever.
    pub fn last_used(&self) -> Option<Instant> {
        self.at
    }

    /// Takes a token at `now` if one is left (after refilling for the time since the
    /// last call); `false` when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_spent_bucket_refills_at_its_rate_up_to_its_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, 4.0);
        assert!(b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(
            b.take(t0 + Duration::from_millis(250)),
            "one token per 250 ms"
        );
        assert!(!b.take(t0 + Duration::from_millis(300)));
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later) && b.take(later));
        assert!(!b.take(later), "never more than the capacity");
    }
}
