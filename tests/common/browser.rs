//! Runs the Chromium driver (`tests/e2e/view.mjs`) inside the viewer namespace.

use super::netns::NetPair;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Opens `url` in a fresh headless Chromium inside `net.viewer`; returns the driver's
/// JSON result (stats of the played stream) and saves `artifacts/{name}.png`.
pub fn run_browser(net: &NetPair, url: &str, name: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(format!("{name}.png"));
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &net.viewer, "node"])
        .arg(dir.join("view.mjs"))
        .args(["--url", url, "--timeout-ms", "45000", "--screenshot"])
        .arg(&shot)
        .arg("--user-data-dir")
        .arg(profile.path())
        .output()
        .expect("node is installed (scripts/setup.sh --test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "browser driver printed no result.\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(shot.exists(), "screenshot saved");
    result
}
