//! The shipped unit and its default configuration, checked with the host's
//! `systemd-analyze` (offline: no running systemd needed). The unit itself runs under
//! real systemd in the device lab (`tests/lab.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The unit with `ExecStart=` pointing at the binary this build made, so `verify` can
/// check the command exists.
fn installable_unit(dir: &Path, unit_text: &str) -> PathBuf {
    let text = unit_text.replace("/usr/bin/edgecam", env!("CARGO_BIN_EXE_edgecam"));
    let path = dir.join("edgecam.service");
    std::fs::write(&path, text).expect("write unit");
    path
}

/// `systemd-analyze verify`, failing on any diagnostic: it exits 0 for unknown keys,
/// printing `Unknown key … ignoring` only.
fn verify(unit: &Path) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (package systemd)");
    let diagnostics = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && diagnostics.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {diagnostics}", out.status))
    }
}

#[test]
fn unit_verifies_without_any_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("systemd/edgecam.service")).unwrap();
    verify(&installable_unit(dir.path(), &text)).expect("clean verify");

    // The check is able to fail: an unknown key and a missing binary are caught although
    // systemd-analyze exits 0 for the first.
    let typo = text.replace("WatchdogSec=10", "WatchdogSec=10\nWatchDogSecs=10");
    let err = verify(&installable_unit(dir.path(), &typo)).unwrap_err();
    assert!(err.contains("Unknown key"), "{err}");
    let missing = dir.path().join("edgecam.service");
    std::fs::write(&missing, &text).unwrap();
    let err = verify(&missing).unwrap_err();
    assert!(
        err.contains("/usr/bin/edgecam") || err.contains("not executable"),
        "{err}"
    );
}

#[test]
fn unit_exposure_is_at_most_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("systemd/edgecam.service")).unwrap();
    let unit = installable_unit(dir.path(), &text);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let level: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for edgecam.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    println!("systemd-analyze security: exposure {level}");
    assert!(level <= 2.0, "exposure {level}");
    // --threshold=20 means 2.0: the exit status agrees.
    assert!(out.status.success(), "{}", out.status);
    // Hardening that matters for a camera daemon is really there.
    for must in [
        "✓ PrivateUsers=",
        "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "✓ SystemCallFilter=~@privileged",
        "✓ User=/DynamicUser=",
    ] {
        assert!(stdout.contains(must), "{must} missing:\n{stdout}");
    }
    // Devices: cameras, encoders and sound cards only (the closed policy's ACL).
    let acl = stdout
        .lines()
        .find(|l| l.contains("DeviceAllow="))
        .expect("DeviceAllow line");
    assert!(
        acl.contains("char-video4linux:rw") && acl.contains("char-alsa:rw"),
        "{acl}"
    );
    assert!(!acl.contains("block-"), "{acl}");
}

#[test]
fn default_service_config_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .arg("--config")
        .arg(repo().join("systemd/edgecam.toml"))
        .arg("--check-config")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("configuration OK"));
}
