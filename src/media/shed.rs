//! The ladder shrinks itself when the encoders cannot keep up: while the low H.264 rung
//! is open and the rungs deliver clearly fewer frames than the camera captures, the low
//! rung is withheld for a while (its valve closes once its viewers have left it, which
//! hands its CPU back to the main rung), then offered again.
//!
//! The evidence is each rung's delivered frame rate, sampled from its hub once per
//! second ([`SAMPLE_EVERY`]): every rung is fed from the same raw frames behind a leaky
//! queue (`media::pipeline`), so an encoder that falls behind loses frames of its own
//! rung, and a starved CPU loses frames everywhere. A rung is short when it delivers
//! less than [`SHORT_OF`] of the reference: the low rung against the main rung, the main
//! rung against its own rate while the low rung was closed (not the configured rate: a
//! webcam in low light delivers fewer frames on its own). [`OVERLOAD_AFTER`] short
//! seconds in a row shed the rung.
//!
//! Only the low H.264 rung is shed. The main rung is the camera, and the VP8 rung's
//! viewers have no other codec; their encoders lose frames (their viewers see a lower
//! frame rate) rather than a viewer losing its picture. Sessions follow the withheld
//! count (`peer::session::feed`): a viewer on the low rung moves to the main rung's
//! keyframes, from where a probe can lift it to the main rung (one that cannot be
//! probed goes where its estimate points).

use super::hub::Hub;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the rungs' frame counts are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A rung delivering less than this share of its reference rate is short.
pub const SHORT_OF: f64 = 0.8;
/// Consecutive short samples that shed the low rung.
pub const OVERLOAD_AFTER: u32 = 3;
/// After the low rung opens, its encoder's start (first IDR, x264's set-up) does not
/// count as falling behind for this long.
pub const WARM_UP: Duration = Duration::from_secs(3);
/// How long the low rung is withheld the first time.
pub const HOLD: Duration = Duration::from_secs(30);
/// Shed again within this long of being offered again: the hold doubles.
pub const RELAPSE_WITHIN: Duration = Duration::from_secs(60);
/// The longest hold.
pub const MAX_HOLD: Duration = Duration::from_secs(600);
/// Weight of each new sample in the main rung's reference rate (an exponential moving
/// average over about five samples).
const REFERENCE_WEIGHT: f64 = 0.2;

/// One sample of the rungs: frames each has delivered since start, and whether the low
/// rung is open (has viewers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Frames the main rung's encoder delivered since start.
    pub main_frames: u64,
    /// Frames the low rung's encoder delivered since start.
    pub low_frames: u64,
    /// The low rung has subscribers (its valve is open).
    pub low_open: bool,
}

/// What [`Shedder::sample`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Withhold the low rung for `hold`: the rungs fell behind.
    Shed {
        /// How long the low rung stays withheld.
        hold: Duration,
        /// The main rung's rate over the last sample, frames per second.
        main_fps: f64,
        /// The low rung's rate over the last sample, frames per second.
        low_fps: f64,
        /// What the main rung delivered before the low rung opened, frames per second.
        reference_fps: f64,
    },
    /// Offer the low rung again.
    Readmit,
}

/// Decides when to withhold the low rung, from [`Sample`]s. Pure; time is passed in.
#[derive(Debug, Clone)]
pub struct Shedder {
    /// The previous sample and when it was taken.
    last: Option<(Instant, Sample)>,
    /// The main rung's rate while the low rung was closed, frames per second.
    reference_fps: f64,
    /// Since when the low rung has been open, while it is.
    open_since: Option<Instant>,
    /// Short samples in a row.
    short: u32,
    /// While withheld: until when.
    withheld_until: Option<Instant>,
    /// When the low rung was last offered again.
    readmitted_at: Option<Instant>,
    /// The next hold.
    hold: Duration,
}

impl Shedder {
    /// A shedder for a camera configured at `fps` frames per second (the reference
    /// until the main rung's own rate has been seen).
    pub fn new(fps: u32) -> Self {
        Self {
            last: None,
            reference_fps: f64::from(fps.max(1)),
            open_since: None,
            short: 0,
            withheld_until: None,
            readmitted_at: None,
            hold: HOLD,
        }
    }

    /// Whether the low rung is withheld now.
    pub fn withheld(&self) -> bool {
        self.withheld_until.is_some()
    }

    /// Takes a sample at `now` (about [`SAMPLE_EVERY`] after the previous one); returns
    /// a change of the low rung's state, if any.
    pub fn sample(&mut self, now: Instant, s: Sample) -> Option<Change> {
        let previous = self.last.replace((now, s));
        if let Some(until) = self.withheld_until {
            if now >= until {
                self.withheld_until = None;
                self.readmitted_at = Some(now);
                self.open_since = None;
                self.short = 0;
                return Some(Change::Readmit);
            }
            return None;
        }
        let open_since = if s.low_open {
            *self.open_since.get_or_insert(now)
        } else {
            self.open_since = None;
            now
        };
        let (at, prev) = previous?;
        let secs = now.saturating_duration_since(at).as_secs_f64();
        // Counters only grow; a shorter one means a restart of the count, not a rate.
        if secs <= 0.0 || s.main_frames < prev.main_frames || s.low_frames < prev.low_frames {
            self.short = 0;
            return None;
        }
        // Counts far below u64::MAX convert exactly enough for a rate.
        let main_fps = (s.main_frames - prev.main_frames) as f64 / secs;
        let low_fps = (s.low_frames - prev.low_frames) as f64 / secs;
        if main_fps == 0.0 {
            // No frame at all is a stalled or restarting capture: the supervisor's
            // business, not the ladder's.
            self.short = 0;
            return None;
        }
        if !s.low_open || !prev.low_open {
            // A second in which the low rung opened or closed is neither evidence.
            if !s.low_open && !prev.low_open {
                self.reference_fps += REFERENCE_WEIGHT * (main_fps - self.reference_fps);
            }
            self.short = 0;
            return None;
        }
        if now.saturating_duration_since(open_since) < WARM_UP {
            return None;
        }
        let short = main_fps < SHORT_OF * self.reference_fps || low_fps < SHORT_OF * main_fps;
        self.short = if short { self.short + 1 } else { 0 };
        if self.short < OVERLOAD_AFTER {
            return None;
        }
        self.short = 0;
        if self
            .readmitted_at
            .is_some_and(|at| now.saturating_duration_since(at) < RELAPSE_WITHIN)
        {
            self.hold = (self.hold * 2).min(MAX_HOLD);
        } else {
            self.hold = HOLD;
        }
        self.withheld_until = Some(now + self.hold);
        Some(Change::Shed {
            hold: self.hold,
            main_fps,
            low_fps,
            reference_fps: self.reference_fps,
        })
    }
}

/// Samples the main and low rungs' hubs every [`SAMPLE_EVERY`] until `shutdown`, and
/// publishes on `withheld` how many of the ladder's lowest rungs are withheld (0 or 1);
/// counts each shed in `sheds`.
pub async fn run(
    (main, low): (Hub, Hub),
    fps: u32,
    withheld: watch::Sender<usize>,
    sheds: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut shedder = Shedder::new(fps);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let (m, l) = (main.stats(), low.stats());
        let sample = Sample {
            main_frames: m.published,
            low_frames: l.published,
            low_open: l.subscribers > 0,
        };
        match shedder.sample(Instant::now(), sample) {
            Some(Change::Shed {
                hold,
                main_fps,
                low_fps,
                reference_fps,
            }) => {
                sheds.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "the encoders cannot keep up (main rung {main_fps:.1} fps of {reference_fps:.1}, \
                     low rung {low_fps:.1} fps): withholding the low H.264 rung for {} s; its \
                     viewers move to the main rung or its keyframes",
                    hold.as_secs()
                );
                withheld.send_replace(1);
            }
            Some(Change::Readmit) => {
                log::info!("offering the low H.264 rung again");
                withheld.send_replace(0);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one sample per second for seconds `from_s..to_s` after `t0`: `main` and `low`
    /// frames per second into the running `counts`, the low rung open or not. Returns the
    /// changes with their second.
    fn run(
        s: &mut Shedder,
        t0: Instant,
        counts: &mut (u64, u64),
        (from_s, to_s): (u64, u64),
        (main, low): (u64, u64),
        open: bool,
    ) -> Vec<(u64, Change)> {
        (from_s..to_s)
            .filter_map(|sec| {
                counts.0 += main;
                counts.1 += if open { low } else { 0 };
                let sample = Sample {
                    main_frames: counts.0,
                    low_frames: counts.1,
                    low_open: open,
                };
                s.sample(t0 + Duration::from_secs(sec), sample)
                    .map(|c| (sec, c))
            })
            .collect()
    }

    #[test]
    fn rungs_that_keep_up_are_never_shed() {
        let (mut s, t0, mut c) = (Shedder::new(30), Instant::now(), (0, 0));
        assert!(run(&mut s, t0, &mut c, (0, 10), (30, 0), false).is_empty());
        assert!(run(&mut s, t0, &mut c, (10, 200), (30, 30), true).is_empty());
        // A slower camera (low light): the reference follows what it delivers.
        let (mut s, mut c) = (Shedder::new(30), (0, 0));
        assert!(run(&mut s, t0, &mut c, (0, 20), (15, 0), false).is_empty());
        assert!(run(&mut s, t0, &mut c, (20, 100), (15, 15), true).is_empty());
        assert!(!s.withheld());
    }

    #[test]
    fn a_low_rung_falling_behind_is_shed_after_three_short_seconds_past_its_warm_up() {
        let (mut s, t0, mut c) = (Shedder::new(30), Instant::now(), (0, 0));
        run(&mut s, t0, &mut c, (0, 10), (30, 0), false);
        // Opens at 10 s; warm-up until 13 s; short from then on.
        let changes = run(&mut s, t0, &mut c, (10, 20), (30, 12), true);
        let [(sec, Change::Shed { hold, low_fps, .. })] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!((*sec, *hold, *low_fps), (15, HOLD, 12.0));
        assert!(s.withheld());
    }

    #[test]
    fn a_starved_main_rung_counts_against_its_rate_before_the_low_rung_opened() {
        let (mut s, t0, mut c) = (Shedder::new(30), Instant::now(), (0, 0));
        run(&mut s, t0, &mut c, (0, 10), (30, 0), false);
        let changes = run(&mut s, t0, &mut c, (10, 20), (20, 20), true);
        assert!(
            matches!(changes.as_slice(), [(15, Change::Shed { main_fps, reference_fps, .. })]
                if *main_fps == 20.0 && (*reference_fps - 30.0).abs() < 0.5),
            "{changes:?}"
        );
    }

    #[test]
    fn one_or_two_short_seconds_and_a_stalled_capture_do_not_shed() {
        let (mut s, t0, mut c) = (Shedder::new(30), Instant::now(), (0, 0));
        run(&mut s, t0, &mut c, (0, 10), (30, 0), false);
        run(&mut s, t0, &mut c, (10, 14), (30, 30), true);
        for start in [14, 20, 26] {
            assert!(run(&mut s, t0, &mut c, (start, start + 2), (30, 10), true).is_empty());
            assert!(run(&mut s, t0, &mut c, (start + 2, start + 6), (30, 30), true).is_empty());
        }
        // No frame at all: a capture restart, not an overload.
        assert!(run(&mut s, t0, &mut c, (32, 42), (0, 0), true).is_empty());
        assert!(!s.withheld());
    }

    #[test]
    fn the_low_rung_comes_back_after_the_hold_and_a_relapse_doubles_it() {
        let (mut s, t0, mut c) = (Shedder::new(30), Instant::now(), (0, 0));
        run(&mut s, t0, &mut c, (0, 10), (30, 0), false);
        assert_eq!(run(&mut s, t0, &mut c, (10, 16), (30, 5), true).len(), 1);
        // Withheld: its viewers leave it; nothing changes until the hold ends.
        let back = run(&mut s, t0, &mut c, (16, 60), (30, 0), false);
        assert_eq!(back, vec![(15 + HOLD.as_secs(), Change::Readmit)]);
        // Overloaded again soon after: twice the hold.
        let again = run(&mut s, t0, &mut c, (60, 70), (30, 5), true);
        assert!(
            matches!(again.as_slice(), [(_, Change::Shed { hold, .. })] if *hold == HOLD * 2),
            "{again:?}"
        );
        // Much later, a new overload starts from the first hold again.
        run(&mut s, t0, &mut c, (70, 400), (30, 0), false);
        let later = run(&mut s, t0, &mut c, (400, 410), (30, 5), true);
        assert!(
            matches!(later.as_slice(), [(_, Change::Shed { hold, .. })] if *hold == HOLD),
            "{later:?}"
        );
    }

    #[test]
    fn holds_double_up_to_the_cap() {
        let (mut s, t0, mut c) = (Shedder::new(30), Instant::now(), (0, 0));
        let mut holds = Vec::new();
        let mut sec = 0;
        for _ in 0..8 {
            run(&mut s, t0, &mut c, (sec, sec + 5), (30, 0), false);
            sec += 5;
            let changes = run(&mut s, t0, &mut c, (sec, sec + 10), (30, 5), true);
            let Some((at, Change::Shed { hold, .. })) = changes.first() else {
                panic!("{changes:?}");
            };
            holds.push(hold.as_secs());
            sec = at + hold.as_secs() + 1;
            run(&mut s, t0, &mut c, (at + 1, sec), (30, 0), false);
        }
        assert_eq!(holds, [30, 60, 120, 240, 480, 600, 600, 600]);
    }
}
