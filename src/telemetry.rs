//! Logging setup: journald (with structured fields) when started by systemd with a
//! journal stream, stderr otherwise; `[log] target` overrides. `RUST_LOG` overrides
//! the level.

use crate::config::LogTarget;

/// Installs the global logger. `camera_id` becomes the `CAMERA_ID` field on journald.
///
/// # Errors
/// When journald was requested but cannot be reached.
pub fn init(target: LogTarget, level: &str, camera_id: &str) -> anyhow::Result<()> {
    let journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        // webrtc-rs logs much at info, and rumqttd logs routine events at error level;
        // keep them quiet unless asked.
        format!("warn,rumqttd=off,edgecam={level}")
    });
    if journald {
        systemd_journal_logger::JournalLog::new()?
            .with_extra_fields(vec![("CAMERA_ID", camera_id.to_owned())])
            .install()?;
        let max = env_logger::Builder::new()
            .parse_filters(&filter)
            .build()
            .filter();
        log::set_max_level(max);
    } else {
        env_logger::Builder::new()
            .parse_filters(&filter)
            .format_timestamp_millis()
            .try_init()?;
    }
    Ok(())
}
