//! systemd service integration: a sans-IO health policy ([`Health`]) that decides when
//! to send `READY=1`, what `STATUS=` says and whether to pet the watchdog, and the
//! `sd_notify(3)` adapter ([`Notifier`], the only code touching the `sd-notify` crate).
//!
//! Rules (see `docs/systemd.md`):
//! - `READY=1` once, when the capture pipeline has produced an encoded frame *and*
//!   signaling is up or its broker connection is being retried.
//! - `WATCHDOG=1` only while the main loop runs (the caller pets from it), the
//!   signaling task is alive, and video frames are flowing — or capture is being
//!   restarted by the supervisor and has failed fewer than `restart_limit` times in a
//!   row. Past that limit edgecam stops petting, so systemd's watchdog kills it and
//!   `Restart=on-failure` takes over.

use crate::media::supervisor::CaptureState;
use crate::signaling::mqtt::LinkState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the health policy needs to know; one snapshot per check.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The capture supervisor's state.
    pub capture: &'a CaptureState,
    /// The pipeline running now in words, e.g. `video v4l2 (Raw) YUYV 640x360@30,
    /// encoder X264, audio alsa`.
    pub source: &'a str,
    /// Video frames published by the hub since start (monotonic counter).
    pub video_frames: u64,
    /// The MQTT link's state.
    pub broker: &'a LinkState,
    /// Whether the signaling task is still running.
    pub signaling_alive: bool,
    /// Whether the embedded broker still runs (`true` when signaling uses an external
    /// broker): the camera's own client and every viewer depend on it.
    pub embedded_broker_alive: bool,
    /// Viewers with a session.
    pub viewers: u32,
}

/// Fixed facts and limits of the policy.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Frames count as flowing while the newest is at most this old. Must exceed the
    /// supervisor's stall timeout, so the supervisor acts first.
    pub stall_allowance: Duration,
    /// Consecutive capture failures after which edgecam stops petting the watchdog.
    pub restart_limit: u32,
    /// The broker URL (no credentials).
    pub broker: String,
}

/// What to tell systemd after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Send `READY=1` now (true at most once).
    pub ready: bool,
    /// A new `STATUS=` text, when it changed.
    pub status: Option<String>,
    /// Pet the watchdog (`WATCHDOG=1`).
    pub alive: bool,
}

/// The health policy's memory between observations. Pure: time is passed in.
#[derive(Debug)]
pub struct Health {
    policy: HealthPolicy,
    ready: bool,
    frames: u64,
    last_progress: Option<Instant>,
    status: String,
}

impl Health {
    /// A policy that has seen nothing yet.
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            ready: false,
            frames: 0,
            last_progress: None,
            status: String::new(),
        }
    }

    /// Whether `READY=1` has been decided.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The newest `STATUS=` text.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Takes one observation at `now` and decides what to tell systemd.
    pub fn observe(&mut self, now: Instant, obs: &Observation<'_>) -> Verdict {
        if obs.video_frames > self.frames {
            self.frames = obs.video_frames;
            self.last_progress = Some(now);
        }
        let flowing = self
            .last_progress
            .is_some_and(|at| now.saturating_duration_since(at) <= self.policy.stall_allowance);
        let signaling_up = obs.signaling_alive
            && matches!(
                obs.broker,
                LinkState::Connected | LinkState::Retrying { .. }
            );
        let ready = !self.ready && flowing && signaling_up;
        self.ready |= ready;
        let capture_ok = match obs.capture {
            CaptureState::Starting => true,
            CaptureState::Running | CaptureState::DeviceLost { .. } => flowing,
            CaptureState::Restarting { failures, .. } => *failures < self.policy.restart_limit,
            CaptureState::Stopped => false,
        };
        let alive = obs.signaling_alive && obs.embedded_broker_alive && capture_ok;
        let text = self.status_text(obs, flowing, alive);
        let status = (text != self.status).then(|| {
            self.status.clone_from(&text);
            text
        });
        Verdict {
            ready,
            status,
            alive,
        }
    }

    fn status_text(&self, obs: &Observation<'_>, flowing: bool, alive: bool) -> String {
        let capture = match obs.capture {
            CaptureState::Starting => format!("starting capture: {}", obs.source),
            CaptureState::Running if flowing => format!("streaming {}", obs.source),
            CaptureState::Running => "capture stalled: no video frame".to_owned(),
            CaptureState::Restarting { failures, reason } if !alive => format!(
                "capture failed {failures} times in a row ({reason}): handing over to systemd"
            ),
            CaptureState::Restarting { failures, reason } => {
                format!("capture restarting after failure {failures} ({reason})")
            }
            // The reason (a GStreamer error with its debug text) is in the log line.
            CaptureState::DeviceLost { device, .. } => {
                format!("camera {device} unplugged: streaming the test pattern until it returns")
            }
            CaptureState::Stopped => "capture stopped".to_owned(),
        };
        let viewers = match obs.viewers {
            1 => "1 viewer".to_owned(),
            n => format!("{n} viewers"),
        };
        let broker = match obs.broker {
            _ if !obs.signaling_alive => "signaling task ended".to_owned(),
            _ if !obs.embedded_broker_alive => {
                "embedded broker stopped: handing over to systemd".to_owned()
            }
            LinkState::Connecting => format!("connecting to broker {}", self.policy.broker),
            LinkState::Connected => format!("broker {} connected", self.policy.broker),
            LinkState::Retrying { attempt } => format!(
                "broker {} unreachable, retrying (attempt {attempt})",
                self.policy.broker
            ),
        };
        format!("{capture}; {viewers}; {broker}")
    }
}

/// The `sd_notify(3)` adapter. Every call is a no-op when edgecam was not started by
/// systemd (no `$NOTIFY_SOCKET`); failures are logged at debug level and otherwise
/// ignored, because a lost notification must not stop the camera.
///
/// Calls never block: notifications go through a bounded queue to one sender thread.
/// `sd_notify` writes a datagram to the service manager's socket, and a datagram socket
/// whose reader falls behind (`net.unix.max_dgram_qlen`, 10 by default) blocks its
/// writer; written from the camera loop, that stopped signaling for good. A full queue
/// drops the notification with a rate-limited warning.
#[derive(Debug, Clone)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$WATCHDOG_USEC` / `$WATCHDOG_PID` (`sd_watchdog_enabled(3)`).
    pub fn from_env() -> Self {
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec))
            .filter(|d| !d.is_zero());
        Self { watchdog }
    }

    /// The unit's `WatchdogSec=`, when the watchdog is on for this process.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to check health and pet: a third of `WatchdogSec=` (systemd advises
    /// half), at most once per second.
    pub fn check_interval(&self) -> Duration {
        self.watchdog
            .map_or(Duration::from_secs(1), |w| {
                (w / 3).min(Duration::from_secs(1))
            })
            .max(Duration::from_millis(100))
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        queue(Note::Ready(status.to_owned()));
    }

    /// `STATUS=…`.
    pub fn status(&self, status: &str) {
        queue(Note::Status(status.to_owned()));
    }

    /// `WATCHDOG=1`, only when the watchdog is on.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            queue(Note::Watchdog);
        }
    }

    /// `RELOADING=1`: a new configuration is being applied; `READY=1` follows when the
    /// restarted pipeline produces its first frame.
    pub fn reloading(&self) {
        queue(Note::Reloading);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        queue(Note::Stopping(status.to_owned()));
    }

    /// Waits until every queued notification was written, at most `limit` (before the
    /// process exits, so `STOPPING=1` is not lost). Returns whether the queue drained.
    pub fn flush(&self, limit: Duration) -> bool {
        let Some(q) = NOTES.get().and_then(Option::as_ref) else {
            return true;
        };
        let end = Instant::now() + limit;
        while q.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// One notification, owned so it can wait in the queue.
#[derive(Debug)]
enum Note {
    Ready(String),
    Status(String),
    Watchdog,
    Reloading,
    Stopping(String),
}

impl Note {
    fn send(&self) {
        use sd_notify::NotifyState as S;
        let states: &[S<'_>] = match self {
            Self::Ready(s) => &[S::Ready, S::Status(s)],
            Self::Status(s) => &[S::Status(s)],
            Self::Watchdog => &[S::Watchdog],
            Self::Reloading => &[S::Reloading, S::Status("reloading the configuration")],
            Self::Stopping(s) => &[S::Stopping, S::Status(s)],
        };
        if let Err(e) = sd_notify::notify(false, states) {
            log::debug!("sd_notify: {e}");
        }
    }
}

/// Notifications waiting for the sender thread.
const NOTE_QUEUE: usize = 64;

struct NoteQueue {
    tx: std::sync::mpsc::SyncSender<Note>,
    /// Queued and not yet written.
    pending: AtomicUsize,
    dropped: Mutex<crate::telemetry::RateLimit>,
}

/// The queue, started on first use; `None` without `$NOTIFY_SOCKET`.
static NOTES: OnceLock<Option<NoteQueue>> = OnceLock::new();

fn queue(note: Note) {
    let q = NOTES.get_or_init(|| {
        std::env::var_os("NOTIFY_SOCKET")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Note>(NOTE_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for note in rx {
                    note.send();
                    if let Some(q) = NOTES.get().and_then(Option::as_ref) {
                        q.pending.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("sd_notify: no sender thread ({e}); notifications are off");
            return None;
        }
        Some(NoteQueue {
            tx,
            pending: AtomicUsize::new(0),
            dropped: Mutex::new(crate::telemetry::RateLimit::new(Duration::from_secs(60))),
        })
    });
    let Some(q) = q else { return };
    q.pending.fetch_add(1, Ordering::AcqRel);
    if q.tx.try_send(note).is_err() {
        q.pending.fetch_sub(1, Ordering::AcqRel);
        let mut log = q.dropped.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(more) = log.check(Instant::now()) {
            log::warn!(
                "the service manager is not reading notifications ({NOTE_QUEUE} queued): dropping them{}",
                crate::telemetry::suppressed(more)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            stall_allowance: Duration::from_secs(3),
            restart_limit: 3,
            broker: "mqtt://127.0.0.1:1883".into(),
        }
    }

    fn obs<'a>(capture: &'a CaptureState, frames: u64, broker: &'a LinkState) -> Observation<'a> {
        Observation {
            capture,
            source: "video test pattern, encoder X264, audio test tone",
            video_frames: frames,
            broker,
            signaling_alive: true,
            embedded_broker_alive: true,
            viewers: 0,
        }
    }

    #[test]
    fn ready_needs_a_frame_and_signaling() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let running = CaptureState::Running;
        let v = h.observe(t0, &obs(&CaptureState::Starting, 0, &LinkState::Connected));
        assert!(!v.ready && v.alive);
        assert!(v.status.unwrap().starts_with("starting capture"));
        // Frames but the broker not answered yet: not ready.
        let v = h.observe(t0, &obs(&running, 5, &LinkState::Connecting));
        assert!(!v.ready);
        // Broker being retried counts as "signaling up", with a status saying so.
        let v = h.observe(t0, &obs(&running, 6, &LinkState::Retrying { attempt: 2 }));
        assert!(v.ready);
        assert!(
            v.status
                .unwrap()
                .contains("unreachable, retrying (attempt 2)")
        );
        // Only once.
        let v = h.observe(t0, &obs(&running, 7, &LinkState::Connected));
        assert!(!v.ready && h.is_ready());
    }

    #[test]
    fn status_only_when_changed() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let running = CaptureState::Running;
        assert!(
            h.observe(t0, &obs(&running, 1, &LinkState::Connected))
                .status
                .is_some()
        );
        assert_eq!(
            h.observe(t0, &obs(&running, 2, &LinkState::Connected))
                .status,
            None
        );
        let mut o = obs(&running, 3, &LinkState::Connected);
        o.viewers = 1;
        let s = h.observe(t0, &o).status.unwrap();
        assert!(
            s.contains("streaming video test pattern") && s.contains("; 1 viewer;"),
            "{s}"
        );
    }

    #[test]
    fn watchdog_stops_when_frames_stop_while_running() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let running = CaptureState::Running;
        assert!(
            h.observe(t0, &obs(&running, 10, &LinkState::Connected))
                .alive
        );
        let t1 = t0 + Duration::from_secs(3);
        assert!(
            h.observe(t1, &obs(&running, 10, &LinkState::Connected))
                .alive
        );
        let t2 = t0 + Duration::from_millis(3100);
        let v = h.observe(t2, &obs(&running, 10, &LinkState::Connected));
        assert!(!v.alive);
        assert_eq!(
            v.status.unwrap(),
            "capture stalled: no video frame; 0 viewers; broker mqtt://127.0.0.1:1883 connected"
        );
        // Frames again: alive again.
        assert!(
            h.observe(t2, &obs(&running, 11, &LinkState::Connected))
                .alive
        );
    }

    #[test]
    fn an_unplugged_camera_on_the_test_pattern_is_alive_and_says_so() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let lost = CaptureState::DeviceLost {
            device: "/dev/video0".into(),
            reason: "v4l2src0: Could not read from resource.".into(),
        };
        let v = h.observe(t0, &obs(&lost, 1, &LinkState::Connected));
        assert!(v.alive && v.ready);
        let status = v.status.unwrap();
        assert!(
            status.starts_with(
                "camera /dev/video0 unplugged: streaming the test pattern until it returns;"
            ),
            "{status}"
        );
        // The stand-in stalling is a stall like any other.
        let v = h.observe(
            t0 + Duration::from_secs(4),
            &obs(&lost, 1, &LinkState::Connected),
        );
        assert!(!v.alive);
    }

    #[test]
    fn restarts_are_tolerated_up_to_the_limit() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let late = t0 + Duration::from_secs(60);
        for failures in 1..3 {
            let c = CaptureState::Restarting {
                failures,
                reason: "no video frame for 2000 ms".into(),
            };
            assert!(
                h.observe(late, &obs(&c, 0, &LinkState::Connected)).alive,
                "{failures}"
            );
        }
        let c = CaptureState::Restarting {
            failures: 3,
            reason: "gone".into(),
        };
        let v = h.observe(late, &obs(&c, 0, &LinkState::Connected));
        assert!(!v.alive);
        assert!(
            v.status
                .unwrap()
                .contains("failed 3 times in a row (gone): handing over to systemd")
        );
        assert!(
            !h.observe(late, &obs(&CaptureState::Stopped, 0, &LinkState::Connected))
                .alive
        );
    }

    #[test]
    fn a_dead_signaling_task_is_not_alive_and_never_ready() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let mut o = obs(&CaptureState::Running, 1, &LinkState::Connected);
        o.signaling_alive = false;
        let v = h.observe(t0, &o);
        assert!(!v.alive && !v.ready);
        assert!(v.status.unwrap().ends_with("signaling task ended"));
    }

    #[test]
    fn a_dead_embedded_broker_stops_the_watchdog() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        let mut o = obs(&CaptureState::Running, 1, &LinkState::Connected);
        assert!(h.observe(t0, &o).alive);
        o.embedded_broker_alive = false;
        let v = h.observe(t0, &o);
        assert!(
            !v.alive,
            "no more watchdog pings: systemd restarts the service"
        );
        assert!(
            v.status
                .unwrap()
                .ends_with("embedded broker stopped: handing over to systemd")
        );
    }

    #[test]
    fn check_interval_is_a_third_of_the_watchdog() {
        let n = Notifier {
            watchdog: Some(Duration::from_secs(6)),
        };
        assert_eq!(n.check_interval(), Duration::from_secs(1));
        let n = Notifier {
            watchdog: Some(Duration::from_millis(900)),
        };
        assert_eq!(n.check_interval(), Duration::from_millis(300));
        assert_eq!(
            Notifier { watchdog: None }.check_interval(),
            Duration::from_secs(1)
        );
    }
}
