//! Logging: journald (with structured fields) when started by systemd with a journal
//! stream, stderr otherwise; `[log] target` overrides and `RUST_LOG` overrides the
//! level. Also the helpers that keep logs useful under floods ([`RateLimit`]) and
//! private ([`peer_addr`]).
//!
//! Structured fields: every line carries `CAMERA_ID`; lines about one viewer carry
//! `SESSION_ID` (the `session_id` key-value) and, where a network path is known,
//! `PEER_ADDR` (the `peer_addr` key-value). On stderr they are printed as `key=value`.

use crate::config::LogTarget;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Installs the global logger. `camera_id` becomes the `CAMERA_ID` field on journald.
///
/// # Errors
/// When journald was requested but cannot be reached, or a logger is already installed.
pub fn init(target: LogTarget, level: &str, camera_id: &str) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        // webrtc-rs logs much at info, and rumqttd logs routine events at error level;
        // keep them quiet unless asked.
        format!("warn,rumqttd=off,edgecam={level}")
    });
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter).format_timestamp_millis();
    let filter = builder.build();
    log::set_max_level(filter.filter());
    if use_journald(target, std::env::var_os("JOURNAL_STREAM").as_deref()) {
        let journal = systemd_journal_logger::JournalLog::new()?
            .with_extra_fields(vec![("CAMERA_ID", camera_id.to_owned())]);
        log::set_boxed_logger(Box::new(Quieted::new(FilteredJournal { filter, journal })))?;
    } else {
        log::set_boxed_logger(Box::new(Quieted::new(filter)))?;
    }
    Ok(())
}

/// Dependency log lines that repeat on a timer while nothing is wrong: target prefix,
/// the text that identifies the line, and the window in which one of them is logged.
///
/// - webrtc-rs' ICE agent warns "[agent]: pingAllCandidates called with no candidate
///   pairs" at every check interval (50 ms here) until the viewer's first candidate
///   arrives, and a viewer that sends none (the contract allows it) keeps it going:
///   ~20 lines/s per session.
/// - webrtc-rs' peer connection driver logs "Failed to write packet" at error level for
///   every packet it cannot send, so a network that goes away (Wi-Fi down, a cable
///   pulled) costs ~200 lines/s per session until ICE gives up (tests/faults.rs, the
///   link-down test: ~1900 lines in 10 s).
/// - webrtc-rs' DTLS warns "Unsupported Extension Type" for each TLS 1.3 extension
///   (43, 45, 51) in a browser's ClientHello, which a DTLS 1.2 server skips as it
///   should: three lines for every viewer that connects, and three more for each
///   ClientHello the browser repeats.
const NOISY: &[(&str, &str, Duration)] = &[
    (
        "rtc_ice",
        "pingAllCandidates called with no candidate pairs",
        Duration::from_secs(60),
    ),
    (
        "webrtc::peer_connection",
        "Failed to write packet",
        Duration::from_secs(10),
    ),
    (
        "rtc_dtls::handshake",
        "Unsupported Extension Type",
        Duration::from_secs(60),
    ),
];

/// Which [`NOISY`] entry a record (warning or worse) is, if any. Pure.
fn noisy_kind(target: &str, level: log::Level, message: &str) -> Option<usize> {
    if level > log::Level::Warn {
        return None;
    }
    NOISY
        .iter()
        .position(|(t, text, _)| target.starts_with(t) && message.contains(text))
}

/// Wraps the logger so that each [`NOISY`] line passes at most once per its window,
/// with the count of those held back appended.
struct Quieted<L> {
    inner: L,
    limits: std::sync::Mutex<Vec<RateLimit>>,
}

impl<L: log::Log> Quieted<L> {
    fn new(inner: L) -> Self {
        Self {
            inner,
            limits: std::sync::Mutex::new(NOISY.iter().map(|n| RateLimit::new(n.2)).collect()),
        }
    }
}

impl<L: log::Log> log::Log for Quieted<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        // Only a dependency's warnings are formatted here; everything else passes as is.
        let kind = if NOISY.iter().any(|(t, _, _)| record.target().starts_with(t))
            && self.enabled(record.metadata())
        {
            noisy_kind(record.target(), record.level(), &record.args().to_string())
        } else {
            None
        };
        let Some(kind) = kind else {
            self.inner.log(record);
            return;
        };
        let admitted = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(kind)
            .and_then(|limit| limit.check(Instant::now()));
        if let Some(held_back) = admitted {
            self.inner.log(
                &record
                    .to_builder()
                    .args(format_args!("{}{}", record.args(), suppressed(held_back)))
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// `Auto` means journald exactly when systemd connected stdout/stderr to the journal
/// (`$JOURNAL_STREAM`, systemd.exec(5)).
fn use_journald(target: LogTarget, journal_stream: Option<&OsStr>) -> bool {
    match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => journal_stream.is_some(),
    }
}

/// The journal logger with the same per-module filter as stderr (the journal logger
/// alone only knows one global level).
struct FilteredJournal {
    filter: env_logger::Logger,
    journal: systemd_journal_logger::JournalLog,
}

impl log::Log for FilteredJournal {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.filter.matches(record) {
            self.journal.log(record);
        }
    }

    fn flush(&self) {}
}

/// Lets one log line per `window` through for a repeating event and counts the lines
/// it held back, so floods (a broker that stays away, a viewer spamming bad messages,
/// GStreamer warnings per frame) cost one journal line per window. Pure: time is
/// passed in.
#[derive(Debug, Clone)]
pub struct RateLimit {
    window: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    /// At most one line per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: None,
            held_back: 0,
        }
    }

    /// An event at `now`: `Some(n)` when a line may be logged, `n` being how many events
    /// were held back since the previous line; `None` when this one is held back.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < self.window => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// `" (N similar lines suppressed)"` for a [`RateLimit::check`] count, empty for 0.
pub fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar suppressed)")
    }
}

/// A viewer's network address as logged in the `PEER_ADDR` field: with `redact`, IPv4
/// keeps its /24 (`198.51.100.x`) and IPv6 its /48 (`2001:db8:1::/48`), and the port
/// is dropped, so operators can tell networks apart without storing who watched.
pub fn peer_addr(ip: IpAddr, port: u16, redact: bool) -> String {
    match (ip, redact) {
        (IpAddr::V4(v4), true) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.x")
        }
        (IpAddr::V6(v6), true) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        (IpAddr::V4(_), false) => format!("{ip}:{port}"),
        (IpAddr::V6(_), false) => format!("[{ip}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.check(t0), Some(0));
        assert_eq!(r.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(r.check(t0 + Duration::from_secs(30)), Some(0));
        assert_eq!(suppressed(0), "");
        assert_eq!(suppressed(2), " (2 similar suppressed)");
    }

    #[test]
    fn peer_addresses_are_redacted_to_their_network() {
        let v4: IpAddr = "198.51.100.23".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        assert_eq!(peer_addr(v4, 5000, true), "198.51.100.x");
        assert_eq!(peer_addr(v6, 5000, true), "2001:db8:1::/48");
        assert_eq!(peer_addr(v4, 5000, false), "198.51.100.23:5000");
        assert_eq!(peer_addr(v6, 5000, false), "[2001:db8:1:2::5]:5000");
    }

    #[test]
    fn unsendable_packets_are_noisy_and_other_driver_errors_are_not() {
        let line = "Failed to write packet to 10.198.85.1:56392 from 10.198.85.2:41741: io error: Network is unreachable (os error 101)";
        let target = "webrtc::peer_connection::driver";
        assert_eq!(noisy_kind(target, log::Level::Error, line), Some(1));
        assert_eq!(
            noisy_kind(target, log::Level::Error, "DTLS handshake failed"),
            None
        );
    }

    #[test]
    fn only_the_ice_agents_no_pairs_warning_is_noisy() {
        let line = "[agent]: pingAllCandidates called with no candidate pairs. Connection is not possible yet.";
        assert_eq!(
            noisy_kind("rtc_ice::agent", log::Level::Warn, line),
            Some(0)
        );
        assert_eq!(noisy_kind("rtc_ice::agent", log::Level::Debug, line), None);
        assert_eq!(noisy_kind("edgecam::peer", log::Level::Warn, line), None);
        assert_eq!(
            noisy_kind("rtc_ice::agent", log::Level::Warn, "[agent]: other trouble"),
            None
        );
    }

    #[test]
    fn a_browsers_tls_1_3_extensions_are_noisy() {
        let target = "rtc_dtls::handshake::handshake_message_client_hello";
        let line = "Unsupported Extension Type 0 51";
        assert_eq!(noisy_kind(target, log::Level::Warn, line), Some(2));
        assert_eq!(noisy_kind(target, log::Level::Warn, "other trouble"), None);
    }

    #[test]
    fn journald_is_picked_from_journal_stream() {
        assert!(use_journald(LogTarget::Auto, Some("8:1234".as_ref())));
        assert!(!use_journald(LogTarget::Auto, None));
        assert!(!use_journald(LogTarget::Stderr, Some("8:1234".as_ref())));
        assert!(use_journald(LogTarget::Journald, None));
    }
}
