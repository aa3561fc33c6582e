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

/// The lab's camera configuration: the vivid webcam by its udev path (stable across
/// the hot-plug phase's re-bind) at 640x480, 15 fps (vivid offers at most 25 fps at
/// that size, and x264 under TCG keeps up with 15), the loopback card's capture side
/// as microphone and its playback substream 1 as speaker, a 2 s stall timeout.
fn lab_config() -> String {
    format!(
        r#"[camera]
id = "lab"
[video]
source = "v4l2"
device = "/dev/v4l/by-path/platform-vivid.0-video-index0"
width = 640
height = 480
fps = 15
bitrate_kbps = 1000
stall_timeout_ms = 2000
restart_limit = {RESTART_LIMIT}
[audio]
source = "alsa"
device = "hw:Loopback,1,0"
playback_device = "hw:Loopback,0,1"
[log]
level = "debug"
[access]
mode = "open"
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

/// The amd64 `.deb` of the binary under test, built by cargo-deb from the package
/// metadata in Cargo.toml (the test profile's binary: the lab tests the package, its
/// unit, config and maintainer scripts, not the release optimisations).
fn build_deb(dir: &Path) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/cargo-deb.sh"))
        .args([
            "--no-build",
            "--profile",
            "dev",
            "--no-dbgsym",
            "--fast",
            "--output",
        ])
        .arg(dir)
        .current_dir(repo())
        .output()
        .expect("run cargo-deb.sh");
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(path.lines().last().expect("deb path").trim())
}

/// The marks guest.sh left: name → realtime µs.
fn marks(out: &Path) -> HashMap<String, u64> {
    read(out, "marks.txt")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
        .collect()
}

/// CPU use of the service per phase, as a share of one core: name → percent.
fn cpu(out: &Path) -> HashMap<String, f64> {
    read(out, "cpu.txt")
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_owned();
            let cpu: f64 = f.next()?.parse().ok()?;
            let wall: f64 = f.next()?.parse().ok()?;
            Some((name, 100.0 * cpu / wall.max(1.0)))
        })
        .collect()
}

/// One capture path's run on the installed service: started on `phase`'s config, a
/// viewer decoded video and audio. Returns (the mode line, start → READY ms, viewer).
fn assert_path(
    out: &Path,
    journal: &Journal,
    phase: &str,
    status_prefix: &str,
    context: &dyn Fn() -> String,
) -> (String, i64, Value) {
    let m = marks(out);
    let (start, started) = (m[&format!("start_{phase}")], m[&format!("started_{phase}")]);
    assert_eq!(
        read(out, &format!("start-{phase}.rc")).trim(),
        "0",
        "{phase}: systemctl start failed; {}",
        context()
    );
    let show = show(out, &format!("show-{phase}.txt"));
    assert_eq!(show["ActiveState"], "active", "{phase}");
    assert!(
        show["StatusText"].starts_with(status_prefix),
        "{phase}: STATUS= {:?}",
        show["StatusText"]
    );
    let viewer: Value = serde_json::from_str(&read(out, &format!("viewer-{phase}.json")))
        .unwrap_or_else(|e| panic!("{phase} viewer: {e}"));
    // Started at a keyframe: the first RTP packet belongs to an IDR, and an IDR with
    // SPS/PPS arrived whole. (Not "the first complete frame is that IDR": under TCG on
    // a loaded CI machine a packet of it is sometimes lost on the guest's loopback, and
    // the first complete frame is then a P-frame after it; seen in CI.)
    assert_eq!(viewer["firstPacketKeyframe"], true, "{phase}: {viewer}");
    assert!(viewer["keyframes"].as_u64() >= Some(1), "{phase}: {viewer}");
    assert!(
        viewer["decodedVideo"].as_u64() >= Some(30),
        "{phase}: {viewer}"
    );
    assert!(
        viewer["decodedAudio"].as_u64() >= Some(20),
        "{phase}: {viewer}"
    );
    let mode = journal
        .first("video mode: wished", start)
        .filter(|e| Journal::time_us(e) <= started)
        .map(|e| Journal::message(e).to_owned())
        .unwrap_or_else(|| panic!("{phase}: no 'video mode' line; {}", context()));
    (mode, ms(start, started), viewer)
}

#[test]
fn device_lab_service_with_vivid_v4l2loopback_and_snd_aloop() {
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
    let debs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab-deb");
    copy(&build_deb(&debs), "edgecam.deb");
    copy(&std::env::current_exe().expect("own path"), "lab-viewer");
    copy(&repo().join("tests/lab/guest.sh"), "guest.sh");
    std::fs::write(dir.join("edgecam.toml"), lab_config()).expect("config");

    let boot = Instant::now();
    let status = Command::new("bash")
        .arg(repo().join("tests/lab/boot.sh"))
        .arg(&image)
        .arg(dir)
        .arg("900")
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
    let journal = Journal::load(&out.join("journal.json"));
    let marks = marks(&out);

    // The package installed offline, with its user, unit and config.
    assert_eq!(
        read(&out, "dpkg.rc").trim(),
        "0",
        "{}",
        read(&out, "dpkg.log")
    );

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

    // Shipped config, nothing edited, on vivid (raw 1280x720 only at 12.5 fps):
    // --check-config names the chosen mode, and the service streams it.
    let check = read(&out, "check-defaults.txt");
    assert!(
        check.contains("configuration OK: camera edgecam-lab; video v4l2 (Raw) ")
            && check.contains(" 640x360@30, ")
            && check.trim_end().ends_with('0'),
        "--check-config on the shipped config: {check}"
    );
    let defaults = assert_path(
        &out,
        &journal,
        "defaults",
        "streaming video v4l2 (Raw)",
        &context,
    );
    assert!(
        defaults
            .0
            .ends_with("640x360@30 (largest size at the wished rate)")
            && defaults.0.starts_with("video mode: wished 1280x720@30"),
        "{}",
        defaults.0
    );

    // The lab config: 640x480@15 is offered, so it is taken as wished.
    let lab = assert_path(&out, &journal, "lab", "streaming video v4l2", &context);
    // While the service captures, --check-config finds the camera busy and says who
    // holds it.
    let busy = read(&out, "check-busy.txt");
    assert!(
        busy.contains("platform-vivid.0-video-index0 is busy: in use by pid ")
            && busy.contains(" (edgecam)")
            && busy.trim_end().ends_with('2'),
        "--check-config on a busy camera: {busy}"
    );
    assert!(lab.0.ends_with("640x480@15 (the wish)"), "{}", lab.0);
    let started = show(&out, "show-lab.txt");
    assert_eq!(started["Type"], "notify");
    assert_eq!(started["SubState"], "running");
    assert!(started["StatusText"].contains("broker mqtt://127.0.0.1:1883 connected"));
    assert_eq!(started["WatchdogUSec"], "10s");

    // Talk-back through snd-aloop: the viewer's 880 Hz tone, played by the service on
    // the loopback's playback substream 1, is what the capture side of it recorded.
    // Under TCG the service's x264 takes more than a core, and the playback pipeline
    // stalls. Its bounded queues then drop what piled up, so that talk-back latency
    // stays bounded: the jitter buffer passed on 108 of 201 packets in one run, 2260
    // ms were heard, and 0.68 to 2.3 s of the 4 s in others. How much survives is the
    // VM's speed, not a property of edgecam, so it is not asserted. What is: the pitch,
    // at least 300 ms of tone, and that what the jitter buffer passed on reached the
    // speaker (snd-aloop and the recorder lose nothing). The pitch within 5 %: what the
    // jitter buffer gives up on, the decoder conceals with audio of its own, which
    // pulled the median to 850 Hz in a CI run with 17 of 64 packets concealed; nothing
    // else in the VM sounds, so 5 % still tells the tone from anything else. What
    // reached the speaker: at least 70 % of what the jitter buffer passed on. Passed on
    // in many short fragments, each loses its edges to the decoder's fade out of and
    // back from concealment: a fresh-clone run heard 800 ms of 52 packets (1040 ms,
    // 77 %), under the 80 % this asked before.
    let talk: Value =
        serde_json::from_str(&read(&out, "viewer-talk.talk.json")).expect("talk report");
    assert_eq!(talk["reply"]["ok"], true, "{talk}; {}", context());
    let talk_samples = edgecam_testkit::sound::read_s16le(&out.join("talk.raw")).expect("talk.raw");
    let tone = edgecam_testkit::sound::measure_tone(&talk_samples, edgecam_testkit::sound::RATE);
    // The service's account of the turn: packets played, and what its jitter buffer
    // passed on, gave up on and dropped as late.
    let turn = journal
        .first("talk-back: floor released;", marks["talk"])
        .map_or("(no line)", Journal::message);
    let figure = |label| common::turn_count(turn, label).unwrap_or(0);
    let (played, pushed) = (figure("released; "), figure("jitter buffer: "));
    assert!(
        (tone.hz - 880.0).abs() < 880.0 * 0.05
            && tone.sounding_ms >= 300
            && played >= 100
            && u64::from(tone.sounding_ms) * 10 >= pushed * 20 * 7,
        "{tone:?} heard of 4 s at 880 Hz; {played} packets played, {pushed} passed on by \
         the jitter buffer; talk {talk}; turn: {turn}; {}",
        context()
    );

    // journald: edgecam's own lines carry the structured fields.
    let own: Vec<_> = journal.edgecam().collect();
    assert!(own.len() > 10, "few edgecam journal lines: {}", own.len());
    let lab_lines: Vec<_> = own
        .iter()
        .filter(|e| {
            Journal::time_us(e) >= marks["start_lab"] && Journal::time_us(e) < marks["stopped"]
        })
        .collect();
    assert!(
        lab_lines
            .iter()
            .all(|e| Journal::field(e, "CAMERA_ID") == Some("lab")),
        "a line without CAMERA_ID=lab"
    );
    assert!(
        own.iter()
            .any(|e| Journal::field(e, "SESSION_ID").is_some())
    );
    let flowing = own
        .iter()
        .find(|e| Journal::message(e).starts_with("media flowing over"))
        .expect("a 'media flowing' line");
    let peer = Journal::field(flowing, "PEER_ADDR").expect("PEER_ADDR");
    assert!(peer.ends_with(".x"), "PEER_ADDR {peer:?} is not redacted");
    assert!(Journal::field(flowing, "SESSION_ID").is_some());

    // Stall → supervised restarts → watchdog → systemd restart → READY again.
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

    // Hot-plug: vivid unbound → the test pattern stands in, the viewer keeps decoding;
    // bound again → the camera, from a keyframe; no systemd restart, no bye.
    let gone = journal
        .first("is gone", marks["unplug"])
        .unwrap_or_else(|| panic!("no 'camera is gone' after the unplug; {}", context()));
    let back = journal
        .first("is back", marks["replug"])
        .unwrap_or_else(|| panic!("no 'camera is back' after the replug; {}", context()));
    let (gone_us, back_us) = (Journal::time_us(gone), Journal::time_us(back));
    let unplugged = show(&out, "show-unplugged.txt");
    assert_eq!(unplugged["ActiveState"], "active");
    assert!(
        unplugged["StatusText"].starts_with(
            "camera /dev/v4l/by-path/platform-vivid.0-video-index0 unplugged: streaming the test pattern until it returns;"
        ),
        "STATUS= {:?}",
        unplugged["StatusText"]
    );
    let replugged = show(&out, "show-replugged.txt");
    assert_eq!(
        replugged["NRestarts"], recovered["NRestarts"],
        "systemd restarted it"
    );
    assert!(
        replugged["StatusText"].starts_with("streaming video v4l2"),
        "STATUS= {:?}",
        replugged["StatusText"]
    );
    let timeline: Vec<[u64; 4]> = read(&out, "viewer-hotplug.timeline")
        .lines()
        .filter_map(|l| {
            let v: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
            v.try_into().ok()
        })
        .collect();
    let at = |t: u64| {
        timeline
            .iter()
            .rev()
            .find(|s| s[0] <= t)
            .copied()
            .unwrap_or_else(|| panic!("no viewer sample before {t}"))
    };
    let last = *timeline.last().expect("a timeline");
    let (on_gone, on_replug, on_back) = (at(gone_us + 500_000), at(marks["replug"]), at(back_us));
    assert!(
        on_replug[1] >= on_gone[1] + 10,
        "the viewer decoded {} frames of the stand-in",
        on_replug[1] - on_gone[1]
    );
    assert!(
        last[2] > on_back[2],
        "no keyframe after the camera came back"
    );
    assert!(
        last[1] >= on_back[1] + 10,
        "no camera frames decoded after the return"
    );
    assert_eq!(
        last[3], 0,
        "the viewer got bye or error during the hot-plug"
    );
    // The stand-in drew its clock overlay under the hardened unit: Fontconfig found a
    // cache directory it may write.
    let all = read(&out, "journal-all.txt");
    assert!(!all.contains("Fontconfig error"), "Fontconfig complained");

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
    assert!(
        journal
            .first("timed out", marks["stop"])
            .is_none_or(|e| Journal::time_us(e) > marks["stopped"])
    );
    assert!(
        journal
            .first("Killing", marks["stop"])
            .is_none_or(|e| Journal::time_us(e) > marks["stopped"])
    );
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

    // v4l2loopback, shipped config: MJPEG is decoded and encoded, H.264 passed through.
    let mjpeg = assert_path(
        &out,
        &journal,
        "mjpeg",
        "streaming video v4l2 (Mjpeg)",
        &context,
    );
    // v4l2loopback names Motion-JPEG 'JPEG', and v4l2sink sets no output rate, so it
    // announces its default 30 fps.
    assert!(mjpeg.0.contains("chose JPEG 640x480@"), "{}", mjpeg.0);
    let h264 = assert_path(
        &out,
        &journal,
        "h264",
        "streaming video v4l2 (H264)",
        &context,
    );
    // v4l2sink sets no output rate, so v4l2loopback announces its default 30 fps.
    assert!(h264.0.contains("chose H264 640x480@"), "{}", h264.0);
    assert!(
        show(&out, "show-h264.txt")["StatusText"].contains("encoder Passthrough"),
        "H.264 is not passed through"
    );
    let reencoding = "the camera ignores keyframe requests";
    assert!(
        journal.first(reencoding, marks["start_h264"]).is_none(),
        "a camera with a 5-frame GOP was re-encoded"
    );
    let cpu = cpu(&out);
    let path = |name: &str, (mode, ready, viewer): &(String, i64, Value)| {
        format!(
            "{name}: {} | start → READY {ready} ms | CPU {:.0} % of a core (TCG) | viewer {} video / {} audio decoded, first frame {} ms after offer",
            mode.rsplit("chose ").next().unwrap_or(mode),
            cpu.get(name).copied().unwrap_or(f64::NAN),
            viewer["decodedVideo"],
            viewer["decodedAudio"],
            viewer["firstFrameMs"],
        )
    };
    println!(
        "device lab: image ready in {} ms, VM run {} ms",
        image_ready.as_millis(),
        vm_run.as_millis()
    );
    println!("  {}", path("defaults", &defaults));
    println!("  {}", path("lab", &lab));
    println!("  {}", path("mjpeg", &mjpeg));
    println!("  {}", path("h264", &h264));
    println!(
        "  talk-back: {} Opus packets sent, {} ms heard on snd-aloop at {:.1} Hz (880 Hz sent); {turn}",
        talk["sent"], tone.sounding_ms, tone.hz
    );
    println!(
        "  stall → first supervised restart {} ms, → watchdog {} ms ({restarts} restarts), \
         watchdog → READY again {} ms; reload → READY {} ms; unplug → test pattern {} ms, \
         replug → camera {} ms; systemctl stop {} ms",
        ms(stall, Journal::time_us(first_restart)),
        ms(stall, Journal::time_us(watchdog)),
        ms(Journal::time_us(watchdog), Journal::time_us(ready_again)),
        ms(marks["reload"], Journal::time_us(ready_reloaded)),
        ms(marks["unplug"], gone_us),
        ms(marks["replug"], back_us),
        ms(marks["stop"], marks["stopped"]),
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The viewer half, run by `guest.sh` inside the VM (never on the host): connects to
/// the camera through the VM's embedded broker and writes what it saw as JSON.
/// `EDGECAM_LAB_PHASE=shutdown` signals that it is playing and waits for the camera's
/// `bye`; `hotplug` records what it decoded over time until guest.sh says the camera is
/// back; any other phase waits for decoded video and audio, then says bye.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the device-lab VM, started by guest.sh"]
async fn in_guest_viewer() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: only for the lab VM"));
    let phase = var("EDGECAM_LAB_PHASE");
    let out = PathBuf::from(var("EDGECAM_LAB_OUT"));
    let port: u16 = var("EDGECAM_LAB_BROKER_PORT").parse().expect("port");
    let camera = var("EDGECAM_LAB_CAMERA");
    let mut endpoint = common::viewer::Endpoint::new(port, &camera, &format!("lab-{phase}"));
    // The shipped config is in invite mode: mint an invitation from the secret the
    // service generated (root may read it), as `edgecam invite` would.
    if let Ok(file) = std::env::var("EDGECAM_LAB_SECRET") {
        let (secret, _) = edgecam::access::store::load(Some(Path::new(&file)))
            .unwrap_or_else(|e| panic!("the service's access secret: {e}"));
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        endpoint = endpoint.invited(common::viewer::Invitation::mint(
            &secret, &camera, "lab", exp,
        ));
    }
    let viewer = if phase == "talk" {
        // Under TCG the service's x264 takes most of the CPU: the talker only counts
        // video frames, so that it can encode and send its tone in time.
        common::viewer::Viewer::join_talking(endpoint, false).await
    } else {
        common::viewer::Viewer::join(endpoint, true).await
    };
    let report = match phase.as_str() {
        "shutdown" => {
            let (_, _) = viewer
                .wait_until(Duration::from_secs(90), |r| r.decoded_video >= 5)
                .await;
            std::fs::write(out.with_extension("json.playing"), b"").expect("marker");
            let (_, r) = viewer
                .wait_until(Duration::from_secs(60), |r| !r.ended.is_empty())
                .await;
            r
        }
        "hotplug" => {
            // A timeline of what was decoded, until guest.sh says the camera is back.
            let (_, _) = viewer
                .wait_until(Duration::from_secs(90), |r| r.decoded_video >= 5)
                .await;
            std::fs::write(out.with_extension("json.playing"), b"").expect("marker");
            let done = out.with_file_name("hotplug.done");
            let mut timeline = String::new();
            let limit = Instant::now() + Duration::from_secs(120);
            while !done.exists() && Instant::now() < limit {
                let r = viewer.report();
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                timeline.push_str(&format!(
                    "{now_us} {} {} {}\n",
                    r.decoded_video,
                    r.keyframes,
                    r.ended.len()
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            std::fs::write(out.with_extension("timeline"), timeline).expect("timeline");
            let r = viewer.report();
            viewer.bye().await;
            r
        }
        "talk" => {
            // Talk a 880 Hz tone for 4 s; guest.sh records the loopback's capture side.
            let talker = viewer;
            let (_, _) = talker
                .wait_until(Duration::from_secs(90), |r| r.decoded_video >= 5)
                .await;
            let reply = talker.control(r#"{"id":1,"cmd":"talk"}"#).await.reply;
            let sent = talker.talk_tone(880, Duration::from_secs(4)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = talker.control(r#"{"id":2,"cmd":"talk-end"}"#).await;
            let r = talker.report();
            talker.bye().await;
            std::fs::write(
                out.with_extension("talk.json"),
                serde_json::json!({"reply": reply, "sent": sent}).to_string(),
            )
            .expect("talk report");
            r
        }
        // defaults, watch, mjpeg, h264: decoded video and Opus audio.
        _ => {
            let (_, r) = viewer
                .wait_until(Duration::from_secs(90), |r| {
                    r.decoded_video >= 30 && r.decoded_audio >= 20
                })
                .await;
            viewer.bye().await;
            r
        }
    };
    let doc = serde_json::json!({
        "videoFrames": report.video_frames,
        "decodedVideo": report.decoded_video,
        "opusPackets": report.opus_packets,
        "decodedAudio": report.decoded_audio,
        "firstFrameIdrWithSpsPps": report.first_frame_idr_with_sps_pps,
        "firstPacketKeyframe": report.first_packet_keyframe,
        "firstFrameMs": report.first_frame_after_offer.map(|d| d.as_millis() as u64),
        "keyframes": report.keyframes,
        "state": report.state,
        "ended": report.ended,
    });
    std::fs::write(&out, doc.to_string()).expect("write report");
}
