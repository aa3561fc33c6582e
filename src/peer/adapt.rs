//! Which rung of the H.264 ladder a viewer gets, from its own bandwidth estimate
//! (sans-IO, time passed in).
//!
//! Each viewer has a send-side estimate (GCC over TWCC feedback, `rtc::interceptor::Gcc`,
//! draft-ietf-rmcat-gcc-02). [`RungChooser`] turns the stream of estimates into switch
//! decisions with hysteresis: down soon after the estimate stops covering the current
//! rung, up only after it has covered the next rung up for a while, and never up again
//! right after a switch down. The feed carries a decision out at the next IDR of the
//! target rung, on the viewer's own SSRC and sequence space.
//!
//! Where the viewer can be probed (it negotiated RTX, see `peer::bwprobe`), a switch up
//! is decided by a probe of the next rung's need instead: GCC's target climbs on an
//! underused link whatever the link's size, so it cannot say that a larger rung fits.
//! [`RungChooser::probe_due`] says when to probe, [`RungChooser::on_probe`] takes the
//! result.

use crate::media::hub::Hub;
use std::time::{Duration, Instant};

/// One rung a viewer can be switched to.
#[derive(Debug, Clone)]
pub struct LadderRung {
    /// For stats and logs: `main`, `low`.
    pub name: &'static str,
    /// Its frames.
    pub hub: Hub,
    /// Its encoder's target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Its picture, pixels (for stats and logs).
    pub width: u32,
    /// Pixels.
    pub height: u32,
}

/// Room for the encoder overshooting around IDRs and for RTP/SRTP/UDP headers: a
/// rung's video needs its bitrate times this on the wire.
pub const OVERHEAD: f64 = 1.25;
/// The audio stream's share of an estimate, kbit/s (Opus at up to 40 kbit/s on the
/// wire).
pub const AUDIO_KBPS: f64 = 40.0;
/// The smallest video budget [`video_share_bps`] gives, bits per second.
pub const MIN_VIDEO_BPS: f64 = 50_000.0;

/// What a rung needs from the estimate, kbit/s: its video bitrate × [`OVERHEAD`], plus
/// [`AUDIO_KBPS`].
pub fn needed_kbps(bitrate_kbps: u32) -> f64 {
    f64::from(bitrate_kbps) * OVERHEAD + AUDIO_KBPS
}

/// The inverse of [`needed_kbps`]: the video payload bitrate an estimate of
/// `estimate_bps` carries, bits per second (at least [`MIN_VIDEO_BPS`]).
pub fn video_share_bps(estimate_bps: f64) -> f64 {
    ((estimate_bps - AUDIO_KBPS * 1000.0) / OVERHEAD).max(MIN_VIDEO_BPS)
}

/// How long the estimate must stay below the current rung's need before a switch down.
pub const DOWN_AFTER: Duration = Duration::from_millis(700);
/// How long the estimate must cover the next rung up before a switch up.
pub const UP_AFTER: Duration = Duration::from_secs(4);
/// No switch up within this long of a switch down; doubled after each switch up that
/// had to be undone within [`FAILED_UP_WITHIN`], up to [`MAX_UP_HOLD`].
pub const UP_HOLD: Duration = Duration::from_secs(6);
/// A switch down this soon after a switch up means the switch up failed.
pub const FAILED_UP_WITHIN: Duration = Duration::from_secs(10);
/// The longest hold after failed switches up.
pub const MAX_UP_HOLD: Duration = Duration::from_secs(60);
/// A probe tests the next rung's need times this.
pub const PROBE_MARGIN: f64 = 1.2;
/// The first probe after a failed one waits this long; each further failure doubles
/// it, up to [`MAX_PROBE_EVERY`].
pub const PROBE_EVERY: Duration = Duration::from_secs(3);
/// The longest wait between probes.
pub const MAX_PROBE_EVERY: Duration = Duration::from_secs(10);
/// A probe without a result after this long is given up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Chooses a rung (index into a ladder sorted by bitrate, highest first) from
/// bandwidth estimates. Pure; every instant is a parameter.
///
/// Below the lowest rung is one more level, index `ladder.len()`: the lowest rung's
/// keyframes only, as the estimate allows (`peer::budget`), for a link that cannot
/// carry even the lowest rung. It is entered and left like a rung, so leaving it needs
/// the same evidence as a switch up.
#[derive(Debug, Clone)]
pub struct RungChooser {
    /// The ladder's needs, kbit/s, highest first, then the keyframes-only level's (0).
    needs: Vec<f64>,
    current: usize,
    below_since: Option<Instant>,
    above_since: Option<Instant>,
    last_down: Option<Instant>,
    last_up: Option<Instant>,
    up_hold: Duration,
    /// Switches up come from probes ([`Self::set_probing`]).
    probing: bool,
    next_probe: Option<Instant>,
    probe_every: Duration,
    probe_sent: Option<Instant>,
}

impl RungChooser {
    /// A chooser over rungs of `bitrates_kbps` (highest first), starting on rung 0.
    pub fn new(bitrates_kbps: &[u32]) -> Self {
        Self {
            // The keyframes-only level needs nothing; an empty ladder has no levels.
            needs: bitrates_kbps
                .iter()
                .copied()
                .map(needed_kbps)
                .chain((!bitrates_kbps.is_empty()).then_some(0.0))
                .collect(),
            current: 0,
            below_since: None,
            above_since: None,
            last_down: None,
            last_up: None,
            up_hold: UP_HOLD,
            probing: false,
            next_probe: None,
            probe_every: PROBE_EVERY,
            probe_sent: None,
        }
    }

    /// Whether switches up are decided by probes (the viewer can be probed) rather than
    /// by the estimate.
    pub fn set_probing(&mut self, probing: bool) {
        self.probing = probing;
    }

    /// The rate to probe at `now`, bits per second, if a probe is due: on a rung below
    /// the top, after the hold since the last switch down, [`PROBE_EVERY`] (backing off
    /// to [`MAX_PROBE_EVERY`]) after a failed probe, and not while one is under way.
    pub fn probe_due(&mut self, now: Instant) -> Option<f64> {
        if !self.probing {
            return None;
        }
        let up = self.current.checked_sub(1)?;
        if self
            .probe_sent
            .is_some_and(|at| now.saturating_duration_since(at) < PROBE_TIMEOUT)
        {
            return None;
        }
        let held = self
            .last_down
            .is_none_or(|down| now.saturating_duration_since(down) >= self.up_hold);
        if !held || self.next_probe.is_some_and(|at| now < at) {
            return None;
        }
        self.probe_sent = Some(now);
        Some(self.needs[up] * PROBE_MARGIN * 1000.0)
    }

    /// A probe's result at `now`: what the link carried, bits per second (0: the probe
    /// failed). Returns the rung to switch up to when it covers the next rung's need.
    pub fn on_probe(&mut self, now: Instant, bits_per_second: f64) -> Option<usize> {
        self.probe_sent = None;
        let up = self.current.checked_sub(1)?;
        if bits_per_second / 1000.0 >= self.needs[up] {
            self.probe_every = PROBE_EVERY;
            self.next_probe = None;
            return Some(self.switch(up, now, false));
        }
        self.next_probe = Some(now + self.probe_every);
        self.probe_every = (self.probe_every * 2).min(MAX_PROBE_EVERY);
        None
    }

    /// The rung chosen now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The highest level whose need an estimate of `bits_per_second` covers: a rung,
    /// or the keyframes-only level (`ladder.len()`) when it covers none.
    pub fn level_for(&self, bits_per_second: f64) -> usize {
        let kbps = bits_per_second / 1000.0;
        self.needs
            .iter()
            .position(|&need| need <= kbps)
            .unwrap_or(self.needs.len().saturating_sub(1))
    }

    /// Puts the chooser on `level`: the ladder changed under the viewer
    /// (`media::shed`). Going up needs the usual evidence (a probe, or a steady
    /// estimate) but no hold: the move was not the link's doing.
    pub fn reset_to(&mut self, level: usize) {
        self.current = level.min(self.needs.len().saturating_sub(1));
        self.below_since = None;
        self.above_since = None;
    }

    /// Takes the estimate at `now`, bits per second; returns the rung to switch to, if
    /// the estimate calls for a switch.
    pub fn on_estimate(&mut self, now: Instant, bits_per_second: f64) -> Option<usize> {
        let kbps = bits_per_second / 1000.0;
        let need = self.needs.get(self.current).copied()?;
        if kbps < need && self.current + 1 < self.needs.len() {
            self.above_since = None;
            let since = *self.below_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= DOWN_AFTER {
                // The highest rung the estimate covers, else the lowest.
                let to = (self.current + 1..self.needs.len())
                    .find(|&i| self.needs[i] <= kbps)
                    .unwrap_or(self.needs.len() - 1);
                if self
                    .last_up
                    .is_some_and(|up| now.saturating_duration_since(up) < FAILED_UP_WITHIN)
                {
                    self.up_hold = (self.up_hold * 2).min(MAX_UP_HOLD);
                }
                return Some(self.switch(to, now, true));
            }
            return None;
        }
        self.below_since = None;
        let up = self.current.checked_sub(1)?;
        let held = self
            .last_down
            .is_none_or(|down| now.saturating_duration_since(down) >= self.up_hold);
        if kbps >= self.needs[up] && held && !self.probing {
            let since = *self.above_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_AFTER {
                return Some(self.switch(up, now, false));
            }
        } else {
            self.above_since = None;
        }
        None
    }

    fn switch(&mut self, to: usize, now: Instant, down: bool) -> usize {
        self.current = to;
        self.below_since = None;
        self.above_since = None;
        if down {
            self.last_down = Some(now);
        } else {
            self.last_up = Some(now);
        }
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Feeds `kbps` every 100 ms from `from` for `for_ms`; returns the switches with
    /// their time (ms since `t0`).
    fn feed(
        c: &mut RungChooser,
        t0: Instant,
        from: u64,
        for_ms: u64,
        kbps: f64,
    ) -> Vec<(u64, usize)> {
        (0..for_ms / 100)
            .filter_map(|i| {
                let at = from + i * 100;
                c.on_estimate(t0 + MS(at), kbps * 1000.0).map(|r| (at, r))
            })
            .collect()
    }

    #[test]
    fn needs_cover_the_bitrate_overshoot_headers_and_audio() {
        assert_eq!(needed_kbps(2000), 2540.0);
        assert_eq!(needed_kbps(500), 665.0);
        assert_eq!(video_share_bps(665_000.0), 500_000.0);
        assert_eq!(video_share_bps(60_000.0), MIN_VIDEO_BPS);
    }

    #[test]
    fn a_changed_ladder_puts_the_viewer_on_the_level_its_estimate_covers_without_a_hold() {
        let t0 = Instant::now();
        let full = RungChooser::new(&[2000, 500]);
        assert_eq!(
            [3000.0, 2540.0, 2000.0, 665.0, 300.0].map(|k| full.level_for(k * 1000.0)),
            [0, 0, 1, 1, 2]
        );
        // The low rung withheld: main, then the main rung's keyframes.
        let mut main_only = RungChooser::new(&[2000]);
        let level = main_only.level_for(800_000.0);
        assert_eq!(level, 1);
        main_only.reset_to(level);
        assert_eq!(main_only.current(), 1);
        // Going up needs no hold, only UP_AFTER of a covering estimate.
        let up = feed(&mut main_only, t0, 0, 5000, 5000.0);
        assert_eq!(up, vec![(UP_AFTER.as_millis() as u64, 0)]);
        // With probing, a probe is due at once.
        let mut probed = RungChooser::new(&[2000]);
        probed.set_probing(true);
        probed.reset_to(1);
        assert_eq!(probed.probe_due(t0), Some(2540.0 * PROBE_MARGIN * 1000.0));
        assert_eq!(RungChooser::new(&[]).level_for(1e6), 0);
    }

    #[test]
    fn a_short_dip_does_not_switch_and_a_lasting_one_does() {
        let t0 = Instant::now();
        let mut c = RungChooser::new(&[2000, 500]);
        assert!(
            feed(&mut c, t0, 0, 600, 1000.0).is_empty(),
            "600 ms is a dip"
        );
        assert!(feed(&mut c, t0, 600, 1000, 3000.0).is_empty());
        let switched = feed(&mut c, t0, 1600, 2000, 800.0);
        assert_eq!(switched, [(2300, 1)], "down 700 ms after the estimate fell");
        assert_eq!(c.current(), 1);
        // Below even the lowest rung: its keyframes only.
        assert_eq!(feed(&mut c, t0, 3600, 3000, 200.0), [(4300, 2)]);
    }

    #[test]
    fn up_only_after_the_hold_and_a_steady_estimate() {
        let t0 = Instant::now();
        let mut c = RungChooser::new(&[2000, 500]);
        assert_eq!(feed(&mut c, t0, 0, 1000, 700.0), [(700, 1)]);
        // The estimate recovers at once, but the hold (6 s from the switch down) and
        // then 4 s of steady estimate come first.
        let up = feed(&mut c, t0, 1000, 20_000, 3000.0);
        assert_eq!(up, [(10_700, 0)]);
        // An estimate that wavers restarts the 4 s.
        let t1 = t0 + MS(100_000);
        let mut c = RungChooser::new(&[2000, 500]);
        assert_eq!(feed(&mut c, t1, 0, 1000, 700.0).len(), 1);
        assert!(feed(&mut c, t1, 7000, 3000, 3000.0).is_empty());
        assert!(feed(&mut c, t1, 10_000, 100, 2000.0).is_empty());
        assert_eq!(feed(&mut c, t1, 10_100, 5000, 3000.0), [(14_100, 0)]);
    }

    #[test]
    fn a_switch_up_undone_at_once_doubles_the_hold() {
        let t0 = Instant::now();
        let mut c = RungChooser::new(&[2000, 500]);
        assert_eq!(feed(&mut c, t0, 0, 1000, 700.0), [(700, 1)]);
        assert_eq!(feed(&mut c, t0, 1000, 10_000, 3000.0), [(10_700, 0)]);
        // The link could not carry it after all: down again within 10 s.
        assert_eq!(feed(&mut c, t0, 11_000, 1000, 700.0), [(11_700, 1)]);
        // Now the hold is 12 s: no switch up before 23.7 s, then 4 s steady.
        let up = feed(&mut c, t0, 12_000, 30_000, 3000.0);
        assert_eq!(up, [(27_700, 0)]);
    }

    #[test]
    fn a_three_rung_ladder_drops_to_the_highest_rung_the_estimate_covers() {
        let t0 = Instant::now();
        let mut c = RungChooser::new(&[4000, 2000, 500]);
        assert_eq!(feed(&mut c, t0, 0, 1000, 2600.0), [(700, 1)]);
        let mut c = RungChooser::new(&[4000, 2000, 500]);
        assert_eq!(feed(&mut c, t0, 0, 1000, 900.0), [(700, 2)]);
        // Up one rung at a time.
        let up = feed(&mut c, t0, 1000, 30_000, 9000.0);
        assert_eq!(up, [(10_700, 1), (14_800, 0)]);
    }

    #[test]
    fn with_probing_only_a_probe_switches_up() {
        let t0 = Instant::now();
        let mut c = RungChooser::new(&[2000, 500]);
        c.set_probing(true);
        assert_eq!(c.probe_due(t0), None, "on the top rung");
        assert_eq!(feed(&mut c, t0, 0, 1000, 700.0), [(700, 1)]);
        // The estimate alone never switches up.
        assert!(feed(&mut c, t0, 1000, 20_000, 9000.0).is_empty());
        assert_eq!(c.probe_due(t0 + MS(5000)), None, "within the 6 s hold");
        let rate = c.probe_due(t0 + MS(6700)).expect("due after the hold");
        assert_eq!(rate, 2540.0 * 1.2 * 1000.0);
        assert_eq!(c.probe_due(t0 + MS(6800)), None, "one at a time");
        // Failed: next after 3 s, then 6 s, then 10 s at most.
        assert_eq!(c.on_probe(t0 + MS(7000), 900_000.0), None);
        assert_eq!(c.probe_due(t0 + MS(9900)), None);
        assert!(c.probe_due(t0 + MS(10_000)).is_some());
        assert_eq!(c.on_probe(t0 + MS(10_200), 0.0), None);
        assert_eq!(c.probe_due(t0 + MS(16_100)), None);
        assert!(c.probe_due(t0 + MS(16_200)).is_some());
        assert_eq!(c.on_probe(t0 + MS(16_400), 0.0), None);
        assert_eq!(c.on_probe(t0 + MS(16_400), 0.0), None);
        // A lost result is given up after 3 s.
        assert!(c.probe_due(t0 + MS(26_400)).is_some());
        assert!(c.probe_due(t0 + MS(29_400)).is_some());
        // The link carries the main rung: up at once.
        assert_eq!(c.on_probe(t0 + MS(29_600), 3_000_000.0), Some(0));
        assert_eq!(c.probe_due(t0 + MS(40_000)), None, "on the top rung");
    }

    #[test]
    fn below_the_lowest_rung_is_keyframes_only_and_left_like_a_rung() {
        let t0 = Instant::now();
        let mut c = RungChooser::new(&[2000]);
        assert_eq!(
            feed(&mut c, t0, 0, 5000, 100.0),
            [(700, 1)],
            "keyframes only"
        );
        assert!(
            feed(&mut c, t0, 5000, 2000, 0.0).is_empty(),
            "nothing lower"
        );
        assert_eq!(feed(&mut c, t0, 7000, 5000, 9000.0), [(11_000, 0)]);
        // From the main rung of two straight to keyframes only of the low one.
        let mut c = RungChooser::new(&[2000, 500]);
        assert_eq!(feed(&mut c, t0, 0, 1000, 300.0), [(700, 2)]);
        // With probing, a probe of the low rung's need leaves it.
        c.set_probing(true);
        assert_eq!(c.probe_due(t0 + MS(6700)), Some(665.0 * 1.2 * 1000.0));
        assert_eq!(c.on_probe(t0 + MS(6900), 700_000.0), Some(1));
        let mut none = RungChooser::new(&[]);
        assert_eq!(none.on_estimate(t0, 1e6), None);
    }
}
