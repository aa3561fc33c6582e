//! Where the access secret lives: a configured file, or `access-secret` in the state
//! directory, created at first start with mode 0600. The one module of `access` that
//! touches the file system.

use super::keys::{SECRET_BYTES, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// File name of the generated secret in the state directory.
pub const SECRET_FILE_NAME: &str = "access-secret";

/// Errors reading or creating the access secret; they name the file, never its bytes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be read or written.
    #[error("access secret {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file holds neither 32 raw bytes nor their base64url text.
    #[error("access secret {0}: not 32 bytes (raw or base64url)")]
    Malformed(PathBuf),
    /// No state directory is known.
    #[error("no state directory: set [access] secret_file, STATE_DIRECTORY or HOME")]
    NoStateDirectory,
    /// The system random source failed.
    #[error("cannot generate the access secret: system random source failed")]
    Random,
}

/// The state directory: systemd's `$STATE_DIRECTORY` (`StateDirectory=edgecam`, its
/// first entry), else `$XDG_STATE_HOME/edgecam`, else `~/.local/state/edgecam`.
pub fn state_directory() -> Option<PathBuf> {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return Some(PathBuf::from(first));
        }
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("edgecam"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/edgecam"))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Secret, StoreError> {
    if let Ok(raw) = <[u8; SECRET_BYTES]>::try_from(bytes) {
        return Ok(Secret::from_bytes(raw));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| StoreError::Malformed(path.to_owned()))?;
    URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; SECRET_BYTES]>::try_from(b).ok())
        .map(Secret::from_bytes)
        .ok_or_else(|| StoreError::Malformed(path.to_owned()))
}

/// Reads the secret from `configured`, or from the state directory's
/// [`SECRET_FILE_NAME`], without creating anything (for `edgecam invite`: a secret it
/// made would not be the one the service reads).
///
/// # Errors
/// [`StoreError`]: the file is missing, unreadable or malformed, or no state directory.
pub fn load(configured: Option<&Path>) -> Result<(Secret, PathBuf), StoreError> {
    let path = match configured {
        Some(p) => p.to_owned(),
        None => state_directory()
            .ok_or(StoreError::NoStateDirectory)?
            .join(SECRET_FILE_NAME),
    };
    let bytes = std::fs::read(&path).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((parse(&path, &bytes)?, path))
}

/// Reads the secret from `configured`, or from the state directory's
/// [`SECRET_FILE_NAME`], generating it there (mode 0600, base64url text) when absent.
/// Returns the secret and the file it came from.
///
/// # Errors
/// [`StoreError`]: a configured file that is missing or malformed, no state directory,
/// or one that cannot be written.
pub fn load_or_create(configured: Option<&Path>) -> Result<(Secret, PathBuf), StoreError> {
    load_or_create_in(configured, state_directory())
}

/// [`load_or_create`] with the state directory given.
///
/// # Errors
/// As [`load_or_create`].
pub fn load_or_create_in(
    configured: Option<&Path>,
    state_dir: Option<PathBuf>,
) -> Result<(Secret, PathBuf), StoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    if let Some(path) = configured {
        let bytes = std::fs::read(path).map_err(io(path))?;
        return Ok((parse(path, &bytes)?, path.to_owned()));
    }
    let dir = state_dir.ok_or(StoreError::NoStateDirectory)?;
    let path = dir.join(SECRET_FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => return Ok((parse(&path, &bytes)?, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let secret = Secret::generate().map_err(|_| StoreError::Random)?;
    // create_new: two starts racing never overwrite each other's secret.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    writeln!(file, "{}", URL_SAFE_NO_PAD.encode(secret.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io(&path))?;
    log::info!("access secret generated in {}", path.display());
    Ok((secret, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_once_with_mode_0600_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join(SECRET_FILE_NAME);
        // The configured-file path: missing is an error naming the file.
        let err = load_or_create(Some(&file)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("access secret {}", file.display())),
            "{err}"
        );
        // Generated in the state directory at first start, private, then reused.
        let (made, at) = load_or_create_in(None, Some(dir.path().join("state"))).unwrap();
        assert_eq!(at, file);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create_in(None, Some(dir.path().join("state")))
                .unwrap()
                .0,
            made
        );
        assert!(matches!(
            load_or_create_in(None, None),
            Err(StoreError::NoStateDirectory)
        ));
        let (read, from) = load_or_create(Some(&file)).unwrap();
        assert_eq!(read, made);
        assert_eq!(from, file);
        // Raw 32 bytes work too; anything else does not, and says so without content.
        std::fs::write(&file, [9u8; 32]).unwrap();
        assert_eq!(
            load_or_create(Some(&file)).unwrap().0,
            Secret::from_bytes([9; 32])
        );
        std::fs::write(&file, "short").unwrap();
        let err = load_or_create(Some(&file)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "access secret {}: not 32 bytes (raw or base64url)",
                file.display()
            )
        );
    }
}
