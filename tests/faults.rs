//! Faults survived with nothing lost (docs/reliability.md, "Faults"): a broker killed
//! and restarted under a watching viewer, and a camera killed and restarted.

mod common;

use common::viewer::{Viewer, wait_status};
use common::{Edgecam, Mosquitto, camera_config, wait_port};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_comes_back_to_a_camera_that_never_stopped_streaming() {
    let mut broker = Mosquitto::start();
    let (port, ws_port) = (broker.port, broker.ws_port);
    let _cam = Edgecam::start(&camera_config("cam", port, ""));
    wait_status(port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    let viewer = Viewer::connect(port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "plays before the fault: {r:?}");

    broker.kill();
    let before = viewer.report().decoded_video;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = viewer.report().decoded_video;
    assert!(
        during >= before + 45,
        "the viewer kept decoding while the broker was dead: {before} -> {during} in 3 s"
    );

    // Back on the same port, with no retained messages: only the camera's republish
    // can bring the status back.
    let _broker = Mosquitto::start_on(port, ws_port);
    let back = Instant::now();
    assert!(
        wait_port(port, Duration::from_secs(5)),
        "broker listens again"
    );
    let status = wait_status(port, "cam", Duration::from_secs(30), |s| {
        s["state"] == "online" && s["viewers"] == 1
    })
    .await;
    let status_back = back.elapsed();
    eprintln!(
        "broker restart: retained status (online, 1 viewer) back {} ms after the broker's return",
        status_back.as_millis()
    );
    assert_eq!(status["protocol"], 1);
    let after = viewer.report().decoded_video;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = viewer.report();
    assert!(
        r.decoded_video >= after + 15,
        "and after it: {after} -> {}",
        r.decoded_video
    );
    assert!(r.ended.is_empty(), "the session lived through it: {r:?}");
    // Signaling works again: a second viewer joins through the new broker.
    let second = Viewer::connect(port, "cam", "v2").await;
    let (ok, r) = second
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "a new viewer joins after the broker's return: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_killed_mid_session_comes_back_with_no_stale_slot() {
    let broker = Mosquitto::start();
    // One slot: a session surviving the restart would turn the next viewer away.
    let config = camera_config("cam", broker.port, "max_viewers = 1\n");
    let mut cam = Edgecam::start(&config);
    wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    let first = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, r) = first
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "plays before the fault: {r:?}");

    cam.kill();
    let offline = wait_status(broker.port, "cam", Duration::from_secs(30), |s| {
        s["state"] == "offline"
    })
    .await;
    assert_eq!(offline["camera"], "cam", "the Last Will marks it offline");

    let _cam = Edgecam::start(&config);
    let online = wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    assert_eq!(
        online["viewers"], 0,
        "no session survives a restart: {online}"
    );
    assert_eq!(online["maxViewers"], 1);
    let second = Viewer::connect(broker.port, "cam", "v2").await;
    let (ok, r) = second
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "the one slot is free for a new viewer: {r:?}");
}

/// A read-only tmpfs mounted on a fresh directory, unmounted when dropped.
struct ReadOnlyDir {
    dir: tempfile::TempDir,
}

impl ReadOnlyDir {
    fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "edgecam-ro"])
            .arg(dir.path())
            .status()
            .expect("mount (util-linux)")
            .success();
        assert!(ok, "mount a read-only tmpfs (the suite runs as root)");
        Self { dir }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_directory_is_a_clear_error_and_no_restart_loop() {
    let broker = Mosquitto::start();
    let state = ReadOnlyDir::mount();
    // Invite mode with no secret yet: it must be created in the state directory.
    let config = camera_config("cam", broker.port, "").replace(
        "[access]\nmode = \"open\"\n",
        "[access]\nmode = \"invite\"\n",
    );
    let state_dir = state.dir.path().to_str().expect("UTF-8 path").to_owned();
    let mut cam = Edgecam::start_env(None, Some(&config), &[("STATE_DIRECTORY", &state_dir)]);
    let status = cam
        .wait_exit(Duration::from_secs(20))
        .expect("edgecam exits by itself");
    // 78 is in the unit's RestartPreventExitStatus=: systemd does not restart it.
    assert_eq!(status.code(), Some(78), "{}", cam.log_text());
    let log = cam.log_text();
    assert!(
        log.contains("access secret") && log.contains("Read-only file system"),
        "the error names the file and the cause: {log}"
    );
    assert!(log.contains("restarting cannot help"), "{log}");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/edgecam.service"
    ))
    .expect("the shipped unit");
    assert!(
        unit.lines()
            .any(|l| l.starts_with("RestartPreventExitStatus=") && l.contains("78")),
        "the shipped unit does not restart on 78"
    );
}
