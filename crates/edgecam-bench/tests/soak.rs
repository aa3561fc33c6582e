//! The soak's 2-minute version (`edgecam-bench soak`, docs/reliability.md "Soak"):
//! held viewers, a viewer joining and leaving every couple of seconds, the broker
//! killed and restarted, the capture source killed and restarted. It checks that the
//! camera lives through all of it and keeps serving; the growth figures are printed, and
//! judged on the documented 2-hour run, not here.

use serde_json::Value;
use std::process::Command;

#[test]
fn two_minutes_of_churn_and_restarts() {
    let out = tempfile::tempdir().unwrap();
    let bench = std::path::Path::new(env!("CARGO_BIN_EXE_edgecam-bench"));
    let edgecam = bench.with_file_name("edgecam");
    assert!(
        edgecam.exists(),
        "{} missing: run the suite with `cargo test --workspace`",
        edgecam.display()
    );
    let status = Command::new(bench)
        .arg("soak")
        .arg("--edgecam")
        .arg(&edgecam)
        .args([
            "--duration-s",
            "120",
            "--sample-s",
            "10",
            "--warmup-s",
            "30",
        ])
        .args(["--broker-restart-s", "40", "--capture-restart-s", "50"])
        .args(["--churn-ms", "1500", "--video", "320x240@15"])
        .arg("--out-dir")
        .arg(out.path())
        .status()
        .expect("edgecam-bench runs");
    assert!(status.success(), "the soak failed: {status}");
    let md = std::fs::read_to_string(out.path().join("soak.md")).unwrap();
    eprintln!("{md}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("soak.json")).unwrap())
            .unwrap();
    // Restarts at 40, 80 and 120 s; at 50 and 100 s.
    assert!(r["brokerRestarts"].as_u64().unwrap() >= 2, "{md}");
    assert_eq!(r["captureRestarts"], 2, "{md}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.len() >= 11, "{md}");
    for s in samples {
        assert!(
            s["fds"].as_u64().unwrap() > 0 && s["threads"].as_u64().unwrap() > 0,
            "/proc read: {s}"
        );
        assert!(s["runtimeTasks"].is_u64(), "/api/stats read: {s}");
    }
    let joins = r["churnJoins"].as_u64().unwrap();
    let firsts = r["churnFirstFrames"].as_u64().unwrap();
    let failures = r["churnFailures"].as_u64().unwrap();
    assert!(firsts >= 15, "churning viewers kept getting frames: {md}");
    // An offer published just before the broker dies is lost with it (Mosquitto keeps
    // nothing across a SIGKILL): at most one churning viewer per broker restart.
    assert!(
        failures <= r["brokerRestarts"].as_u64().unwrap(),
        "{failures} of {joins} churning viewers failed: {md}"
    );
    assert_eq!(
        r["heldViewersPlayingAtEnd"], true,
        "the held viewers still play after every restart: {md}"
    );
}
