//! Counts of refused requests by front-end and reason, for `/metrics`
//! (`edgecam_auth_refusals_total`). Reasons are the gate's fixed texts
//! ([`super::gate::Unauthorized`]), so the label set stays bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Refusals so far, keyed by (front-end, reason). Shared by the MQTT admission and the
/// HTTP server.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl Refusals {
    /// Counts one refusal of a request that came through `frontend` (`mqtt`, `http`).
    pub fn count(&self, frontend: &'static str, reason: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((frontend, reason))
            .or_default() += 1;
    }

    /// `(front-end, reason, count)` for every pair seen, in order.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&(f, r), &n)| (f, r, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_frontend_and_reason() {
        let r = Refusals::default();
        r.count("mqtt", "bad signature");
        r.count("mqtt", "bad signature");
        r.count("http", "no valid bearer token");
        assert_eq!(
            r.snapshot(),
            [
                ("http", "no valid bearer token", 1),
                ("mqtt", "bad signature", 2)
            ]
        );
    }
}
