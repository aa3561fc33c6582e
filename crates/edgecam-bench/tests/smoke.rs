//! Smoke test of the benchmark command (`edgecam-bench`, docs/performance.md): a short
//! run of every phase must produce a complete report. No figure is held to a target
//! here; the targets are read off a full release run, not asserted in timed tests.

use serde_json::Value;
use std::process::Command;

#[test]
fn benchmark_runs_every_phase_and_writes_its_report() {
    let out = tempfile::tempdir().unwrap();
    // The camera binary is built beside the bench by `cargo test --workspace`.
    let bench = std::path::Path::new(env!("CARGO_BIN_EXE_edgecam-bench"));
    let edgecam = bench.with_file_name("edgecam");
    assert!(
        edgecam.exists(),
        "{} missing: run the suite with `cargo test --workspace`",
        edgecam.display()
    );
    let status = Command::new(bench)
        .arg("--edgecam")
        .arg(&edgecam)
        .args(["--viewers", "0,2", "--window-s", "3", "--settle-s", "1"])
        .args(["--keyframe-intervals-ms", "10000", "--ttff-runs", "3"])
        .args(["--browser-runs", "2", "--startup-runs", "1"])
        .arg("--out-dir")
        .arg(out.path())
        .status()
        .expect("edgecam-bench runs");
    assert!(status.success(), "edgecam-bench failed: {status}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let startup = &report["startup"];
    assert_eq!(startup["readyMs"]["n"], 1, "{startup}");
    assert_eq!(startup["firstFrameMs"]["n"], 1, "{startup}");
    assert!(
        startup["firstFrameMs"]["max"].as_f64().unwrap()
            <= startup["readyMs"]["max"].as_f64().unwrap(),
        "READY=1 comes after the first frame: {startup}"
    );

    let ff = &report["firstFrame"][0];
    assert_eq!(ff["keyframeIntervalMs"], 10_000);
    assert_eq!(ff["loadViewerMs"]["n"], 3, "{ff}");
    assert_eq!(
        ff["loadViewerIdrFirst"], 3,
        "every join starts at an IDR with SPS/PPS even with a 10 s GOP: {ff}"
    );
    let chromium = ff["chromium"].as_array().unwrap();
    let brokers: Vec<&str> = chromium
        .iter()
        .map(|c| c["broker"].as_str().unwrap())
        .collect();
    assert_eq!(brokers, ["mosquitto", "embedded"], "{ff}");
    for c in chromium {
        assert_eq!(c["offerMs"]["n"], 2, "{c}");
        assert_eq!(c["pageLoadMs"]["n"], 2, "{c}");
        assert_eq!(c["failures"], serde_json::json!([]), "{c}");
        let t = &c["timelineP50"];
        assert!(
            t["pc-connected"].is_number() && t["page:connack"].is_number(),
            "set-up and page milestones recorded: {c}"
        );
    }

    let steps = report["fanout"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(
        steps[0]["cpuPct"].as_f64().unwrap() > 0.0,
        "edgecam CPU measured"
    );
    assert!(
        steps[0]["rssMib"].as_f64().unwrap() > 1.0,
        "edgecam RSS measured"
    );
    let two = &steps[1];
    assert_eq!(two["viewersPlaying"], 2, "{two}");
    assert!(
        two["fpsMin"].as_f64().unwrap() > 0.0,
        "both viewers got frames: {two}"
    );
    assert!(two["opusPerS"].as_f64().unwrap() > 0.0, "Opus read: {two}");
    assert!(two["captureToRtpCount"].as_u64().unwrap() > 0, "{two}");
    assert!(
        two["loadCpuPct"].as_f64().unwrap() > 0.0,
        "load process CPU kept: {two}"
    );

    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for heading in ["Start-up", "Time to first frame", "Fan-out", "Targets"] {
        assert!(md.contains(heading), "markdown has {heading}:\n{md}");
    }
    assert!(
        report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| ["met", "missed", "–"].contains(&t["verdict"].as_str().unwrap())),
        "{report}"
    );
}
