//! Device lab: edgecam as the hardened systemd service in a Debian bookworm VM (QEMU,
//! software emulation) with real kernel devices — a `vivid` V4L2 camera and an
//! `snd-aloop` ALSA card — real systemd and journald. The VM runs `tests/lab/guest.sh`,
//! which leaves its evidence in a 9p share; this test asserts on it.
//!
//! The same test binary is the viewer inside the VM (`in_guest_viewer`), so the guest
//! runs the suite's own webrtc-rs viewer, which decodes with GStreamer.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RESTART_LIMIT: u32 = 3;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lab's camera configuration: the vivid webcam at 640x480, 15 fps (vivid offers
/// at most 25 fps at that size, and x264 under TCG keeps up with 15), the loopback
/// card's capture side, a 2 s stall timeout.
fn lab_config() -> String {
    format!(
        r#"[camera]
id = "lab"
[video]
source = "v4l2"
device = "/dev/video0"
width = 640
height = 480
fps = 15
bitrate_kbps = 1000
stall_timeout_ms = 2000
restart_limit = {RESTART_LIMIT}
[audio]
source = "alsa"
device = "hw:Loopback,1,0"
[log]
level = "debug"
"#
    )
}

struct Journal {
    entries: Vec<HashMap<String, Value>>,
}

impl Journal {
    fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("journal.json");
        let entries = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Self { entries }
    }

    fn field<'a>(e: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
        e.get(key).and_then(Value::as_str)
    }

    fn message(e: &HashMap<String, Value>) -> &str {
        Self::field(e, "MESSAGE").unwrap_or("")
    }

    fn time_us(e: &HashMap<String, Value>) -> u64 {
        Self::field(e, "__REALTIME_TIMESTAMP")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    /// Lines edgecam itself wrote (not systemd's about the unit).
    fn edgecam(&self) -> impl Iterator<Item = &HashMap<String, Value>> {
        self.entries
            .iter()
            .filter(|e| Self::field(e, "SYSLOG_IDENTIFIER") == Some("edgecam"))
    }

    /// First entry after `after_us` whose message contains `needle`.
    fn first(&self, needle: &str, after_us: u64) -> Option<&HashMap<String, Value>> {
        self.entries
            .iter()
            .find(|e| Self::time_us(e) >= after_us && Self::message(e).contains(needle))
    }

    fn count(&self, needle: &str, after_us: u64, before_us: u64) -> usize {
        self.entries
            .iter()
            .filter(|e| {
                let t = Self::time_us(e);
                t >= after_us && t <= before_us && Self::message(e).contains(needle)
            })
            .count()
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn show(dir: &Path, name: &str) -> HashMap<String, String> {
    read(dir, name)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn ms(from_us: u64, to_us: u64) -> i64 {
    (to_us as i64 - from_us as i64) / 1000
}

#[test]
fn device_lab_service_with_vivid_and_snd_aloop() {
    let t0 = Instant::now();
    let built = Command::new("bash")
        .arg(repo().join("tests/lab/build-image.sh"))
        .output()
        .expect("run build-image.sh");
    assert!(
        built.status.success(),
        "lab image build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim().to_owned());
    let image_ready = t0.elapsed();

    // Kept after the run (target/tmp/lab) so a failure can be read.
    let share = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(&share).expect("share dir");
    let dir = share.as_path();
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, dir.join(to)).unwrap_or_else(|e| panic!("copy {to}: {e}"));
    };
    copy(Path::new(env!("CARGO_BIN_EXE_edgecam")), "edgecam");
    copy(&std::env::current_exe().expect("own path"), "lab-viewer");
    copy(&repo().join("tests/lab/guest.sh"), "guest.sh");
    copy(&repo().join("systemd/edgecam.service"), "edgecam.service");
    std::fs::write(dir.join("edgecam.toml"), lab_config()).expect("config");

    let boot = Instant::now();
    let status = Command::new("bash")
        .arg(repo().join("tests/lab/boot.sh"))
        .arg(&image)
        .arg(dir)
        .arg("600")
        .status()
        .expect("run boot.sh");
    let vm_run = boot.elapsed();
    let out = dir.join("out");
    let guest_log = std::fs::read_to_string(out.join("guest.log")).unwrap_or_default();
    assert!(
        status.success() && out.join("journal.json").exists(),
        "VM run failed ({status}); guest log:\n{guest_log}\nconsole tail:\n{}",
        tail(
            &std::fs::read_to_string(dir.join("console.log")).unwrap_or_default(),
            40
        )
    );
    let context = || format!("guest log:\n{}", tail(&guest_log, 60));

    // `edgecam devices` found both kernel devices through the v4l and alsa crates.
    let devices: Value = serde_json::from_str(&read(&out, "devices.json")).expect("devices");
    let vivid = devices["v4l2"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["driver"] == "vivid"))
        .unwrap_or_else(|| panic!("no vivid camera in {devices}"));
    assert_eq!(vivid["path"], "/dev/video0");
    assert!(vivid["formats"].as_array().is_some_and(|f| !f.is_empty()));
    let pcms = devices["alsa"].as_array().expect("alsa list");
    assert!(
        pcms.iter()
            .any(|p| p["name"].as_str().is_some_and(|n| n.contains("Loopback"))),
        "no ALSA loopback capture PCM in {devices}"
    );

    // The service reached active (running) through READY=1.
    assert_eq!(read(&out, "start.rc").trim(), "0", "{}", context());
    let started = show(&out, "show-started.txt");
    assert_eq!(started["Type"], "notify");
    assert_eq!(started["ActiveState"], "active");
    assert_eq!(started["SubState"], "running");
    assert!(
        started["StatusText"].starts_with("streaming video v4l2"),
        "STATUS= {:?}",
        started["StatusText"]
    );
    assert!(started["StatusText"].contains("broker mqtt://127.0.0.1:1883 connected"));
    assert_eq!(started["WatchdogUSec"], "10s");

    // A viewer decoded video from /dev/video0 and audio from the loopback.
    let watch: Value = serde_json::from_str(&read(&out, "viewer-watch.json")).expect("viewer");
    assert_eq!(watch["firstFrameIdrWithSpsPps"], true, "{watch}");
    assert!(watch["decodedVideo"].as_u64() >= Some(30), "{watch}");
    assert!(watch["decodedAudio"].as_u64() >= Some(20), "{watch}");

    // journald: edgecam's own lines carry the structured fields.
    let journal = Journal::load(&out.join("journal.json"));
    let own: Vec<_> = journal.edgecam().collect();
    assert!(own.len() > 10, "few edgecam journal lines: {}", own.len());
    assert!(
        own.iter()
            .all(|e| Journal::field(e, "CAMERA_ID") == Some("lab")),
        "a line without CAMERA_ID=lab"
    );
    assert!(
        own.iter()
            .any(|e| Journal::field(e, "SESSION_ID").is_some())
    );
    // The mode was negotiated from what vivid lists: 640x480 at 15 fps is offered.
    let mode = own
        .iter()
        .map(|e| Journal::message(e))
        .find(|m| m.starts_with("video mode: wished 640x480@15"))
        .expect("a 'video mode' line");
    assert!(mode.ends_with("640x480@15 (the wish)"), "{mode}");
    let flowing = own
        .iter()
        .find(|e| Journal::message(e).starts_with("media flowing over"))
        .expect("a 'media flowing' line");
    let peer = Journal::field(flowing, "PEER_ADDR").expect("PEER_ADDR");
    assert!(peer.ends_with(".x"), "PEER_ADDR {peer:?} is not redacted");
    assert!(Journal::field(flowing, "SESSION_ID").is_some());

    // Stall → supervised restarts → watchdog → systemd restart → READY again.
    let marks: HashMap<String, u64> = read(&out, "marks.txt")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
        .collect();
    let stall = marks["stall"];
    let first_restart = journal
        .first("capture failed (no video frame", stall)
        .unwrap_or_else(|| panic!("no supervised restart after the stall; {}", context()));
    let watchdog = journal
        .first("Watchdog timeout", stall)
        .unwrap_or_else(|| panic!("no watchdog timeout after the stall; {}", context()));
    let restarts = journal.count("capture failed (", stall, Journal::time_us(watchdog));
    assert!(
        restarts >= RESTART_LIMIT as usize,
        "{restarts} supervised restarts before the watchdog"
    );
    assert!(
        journal
            .first("handing over to systemd", stall)
            .is_some_and(|e| Journal::time_us(e) <= Journal::time_us(watchdog)),
        "no hand-over STATUS before the watchdog"
    );
    let ready_again = journal
        .first("ready: first encoded frame", Journal::time_us(watchdog))
        .unwrap_or_else(|| panic!("not ready again after the watchdog restart; {}", context()));
    let recovered = show(&out, "show-recovered.txt");
    assert_eq!(recovered["ActiveState"], "active");
    assert!(recovered["NRestarts"].parse::<u32>().unwrap_or(0) >= 1);

    // systemctl reload: a broken file is refused, a valid one applied in-process.
    assert!(
        journal
            .first("keeping the running configuration", marks["reload_bad"])
            .is_some_and(|e| Journal::time_us(e) < marks["reload"]),
        "broken config not refused; {}",
        context()
    );
    assert_eq!(read(&out, "reload.rc").trim(), "0");
    assert!(
        journal
            .first("reloading: restarting", marks["reload"])
            .is_some()
    );
    let ready_reloaded = journal
        .first("ready: first encoded frame", marks["reload"])
        .unwrap_or_else(|| panic!("not ready after the reload; {}", context()));
    assert_eq!(
        read(&out, "reload-pid.txt").trim(),
        "same",
        "reload restarted the process"
    );

    // Graceful stop with a viewer watching.
    assert_eq!(read(&out, "stop.rc").trim(), "0");
    let stopped = show(&out, "show-stopped.txt");
    // A stop past TimeoutStopSec= would be Result=timeout, a SIGKILL and systemd saying
    // so; a clean exit is "Deactivated successfully".
    assert_eq!(stopped["Result"], "success", "{stopped:?}");
    assert!(
        journal
            .first("Deactivated successfully", marks["stop"])
            .is_some()
    );
    assert!(journal.first("timed out", marks["stop"]).is_none());
    assert!(journal.first("Killing", marks["stop"]).is_none());
    let bye: Value = serde_json::from_str(&read(&out, "viewer-shutdown.json")).expect("viewer");
    assert!(
        bye["ended"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["type"] == "bye" && m["reason"] == "shutdown")),
        "viewer got no bye shutdown: {bye}"
    );
    assert_eq!(
        read(&out, "video0-holders.txt").trim(),
        "0",
        "/dev/video0 still open"
    );
    let stopping = journal
        .first("shutting down", marks["stop"])
        .expect("shutdown line");
    assert!(
        journal
            .first("stopped", Journal::time_us(stopping))
            .is_some()
    );

    let ready_line = journal.first("ready: first encoded frame", marks["start"]);
    println!(
        "device lab: image ready in {} ms, VM run {} ms; start → READY (systemctl start) {} ms ({}); \
         stall → first supervised restart {} ms, → watchdog {} ms ({restarts} restarts), \
         watchdog → READY again {} ms; reload → READY {} ms; systemctl stop {} ms; viewer: {} video / {} audio decoded, \
         first frame {} ms after offer",
        image_ready.as_millis(),
        vm_run.as_millis(),
        ms(marks["start"], marks["started"]),
        ready_line.map(Journal::message).unwrap_or("?"),
        ms(stall, Journal::time_us(first_restart)),
        ms(stall, Journal::time_us(watchdog)),
        ms(Journal::time_us(watchdog), Journal::time_us(ready_again)),
        ms(marks["reload"], Journal::time_us(ready_reloaded)),
        ms(marks["stop"], marks["stopped"]),
        watch["decodedVideo"],
        watch["decodedAudio"],
        watch["firstFrameMs"],
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The viewer half, run by `guest.sh` inside the VM (never on the host): connects to
/// the camera through the VM's embedded broker and writes what it saw as JSON.
/// `EDGECAM_LAB_PHASE=watch` waits for decoded video and audio, then says bye;
/// `shutdown` signals that it is playing and waits for the camera's `bye`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the device-lab VM, started by guest.sh"]
async fn in_guest_viewer() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: only for the lab VM"));
    let phase = var("EDGECAM_LAB_PHASE");
    let out = PathBuf::from(var("EDGECAM_LAB_OUT"));
    let port: u16 = var("EDGECAM_LAB_BROKER_PORT").parse().expect("port");
    let camera = var("EDGECAM_LAB_CAMERA");
    let viewer = common::viewer::Viewer::connect(port, &camera, &format!("lab-{phase}")).await;
    let report = if phase == "watch" {
        let (_, r) = viewer
            .wait_until(Duration::from_secs(90), |r| {
                r.decoded_video >= 30 && r.decoded_audio >= 20
            })
            .await;
        viewer.bye().await;
        r
    } else {
        let (_, _) = viewer
            .wait_until(Duration::from_secs(90), |r| r.decoded_video >= 5)
            .await;
        std::fs::write(out.with_extension("json.playing"), b"").expect("marker");
        let (_, r) = viewer
            .wait_until(Duration::from_secs(60), |r| !r.ended.is_empty())
            .await;
        r
    };
    let doc = serde_json::json!({
        "videoFrames": report.video_frames,
        "decodedVideo": report.decoded_video,
        "opusPackets": report.opus_packets,
        "decodedAudio": report.decoded_audio,
        "firstFrameIdrWithSpsPps": report.first_frame_idr_with_sps_pps,
        "firstFrameMs": report.first_frame_after_offer.map(|d| d.as_millis() as u64),
        "keyframes": report.keyframes,
        "state": report.state,
        "ended": report.ended,
    });
    std::fs::write(&out, doc.to_string()).expect("write report");
}
