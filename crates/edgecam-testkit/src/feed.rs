//! Video feeds from a separate `gst-launch-1.0` process, for edgecam's
//! `video.source = "pipeline"`: a capture source a test or the soak can freeze
//! (SIGSTOP), kill and start again, as a camera daemon or a network camera would.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `gst-launch-1.0 -q videotestsrc is-live=true pattern=ball ! <caps> ! <sink…>`
/// in a process group of its own (so a signal to the group reaches only the feed).
///
/// # Errors
/// When `gst-launch-1.0` (Debian's gstreamer1.0-tools) cannot be started.
pub fn spawn(caps: &str, sink: &[String]) -> Result<Child, String> {
    use std::os::unix::process::CommandExt as _;
    Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "is-live=true",
            "pattern=ball",
            "!",
            caps,
            "!",
        ])
        .args(sink)
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("gst-launch-1.0 (gstreamer1.0-tools): {e}"))
}

/// Raw video of `caps` into shared memory (`shmsink`, `shm_bytes` large) at `socket`:
/// its death is an error for the reader, and while it is away every start fails. A
/// killed feed leaves its socket behind; this one replaces it, and returns once the new
/// socket exists (at most 10 s).
///
/// # Errors
/// When the process cannot be started or its socket does not appear.
pub fn shm(socket: &Path, caps: &str, shm_bytes: u64) -> Result<Child, String> {
    let _ = std::fs::remove_file(socket);
    let child = spawn(
        caps,
        &[
            "shmsink".into(),
            "wait-for-connection=false".into(),
            format!("shm-size={shm_bytes}"),
            format!("socket-path={}", socket.display()),
        ],
    )?;
    let end = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    if socket.exists() {
        Ok(child)
    } else {
        Err(format!("the feed did not create {}", socket.display()))
    }
}

/// The `video.pipeline` that reads [`shm`]'s feed at `socket`.
pub fn shm_source(socket: &Path, caps: &str) -> String {
    format!(
        "shmsrc socket-path={} is-live=true do-timestamp=true ! {caps}",
        socket.display()
    )
}
