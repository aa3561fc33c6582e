//! Secrets named by `*_file` keys: read from files (systemd credentials among them) so
//! that the configuration file itself holds none.

use super::{Config, ConfigError};
use std::path::{Path, PathBuf};

impl Config {
    /// Reads every `*_file` secret into its value key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when both the value and the file are given, or the file
    /// cannot be read (the error names the file, never its content).
    pub(super) fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        read_secret(
            &mut self.signaling.password,
            self.signaling.password_file.as_deref(),
            "signaling.password_file",
        )?;
        read_secret(
            &mut self.broker.password,
            self.broker.password_file.as_deref(),
            "broker.password_file",
        )?;
        for server in &mut self.webrtc.ice_servers {
            read_secret(
                &mut server.credential,
                server.credential_file.as_deref(),
                "webrtc.ice_servers.credential_file",
            )?;
            read_secret(
                &mut server.secret,
                server.secret_file.as_deref(),
                "webrtc.ice_servers.secret_file",
            )?;
        }
        Ok(())
    }
}

fn read_secret(
    value: &mut Option<String>,
    file: Option<&Path>,
    key: &'static str,
) -> Result<(), ConfigError> {
    if let Some(file) = file {
        if value.is_some() {
            return Err(ConfigError::Invalid {
                key,
                problem: "give either the value or the file, not both".into(),
            });
        }
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
        let file = credential_path(file, credentials.as_deref().map(Path::new))
            .map_err(|problem| ConfigError::Invalid { key, problem })?;
        let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::Invalid {
            key,
            problem: format!("cannot read {}: {e}", file.display()),
        })?;
        *value = Some(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    Ok(())
}

/// The placeholder a `*_file` path may start with to name a systemd credential.
pub const CREDENTIALS_PLACEHOLDER: &str = "${CREDENTIALS_DIRECTORY}";

/// Resolves a `*_file` path: a leading `${CREDENTIALS_DIRECTORY}` becomes the
/// directory systemd put the unit's `LoadCredential=` files in (systemd.exec(5),
/// "Credentials"), so secrets can stay root-only on disk.
///
/// # Errors
/// The path uses the placeholder but edgecam was started without credentials.
pub(super) fn credential_path(file: &Path, credentials: Option<&Path>) -> Result<PathBuf, String> {
    let Some(rest) = file
        .to_str()
        .and_then(|s| s.strip_prefix(CREDENTIALS_PLACEHOLDER))
    else {
        return Ok(file.to_owned());
    };
    match credentials {
        Some(dir) => Ok(dir.join(rest.trim_start_matches('/'))),
        None => Err(format!(
            "{} uses {CREDENTIALS_PLACEHOLDER}, but edgecam was not started by systemd with LoadCredential=",
            file.display()
        )),
    }
}
