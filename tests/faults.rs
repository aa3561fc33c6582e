//! Faults survived with nothing lost (docs/reliability.md, "Faults"): a broker killed
//! and restarted under a watching viewer, a camera killed and restarted, a capture
//! source that stalls and one that dies, a camera whose network link goes down and
//! comes back, a state directory that cannot be written.

mod common;

use common::viewer::{Endpoint, Viewer, online_camera_from, wait_status};
use common::{Edgecam, Mosquitto, camera_config, wait_port};
use edgecam_testkit::feed;
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

/// A video feed from a separate GStreamer process, which edgecam reads as its `pipeline`
/// source: a source the test can freeze (SIGSTOP), resume, kill and start again, as a
/// camera daemon or a network camera would.
struct Feed {
    socket: Option<std::path::PathBuf>,
    child: std::process::Child,
}

const FEED_CAPS: &str = "video/x-raw,format=I420,width=320,height=240,framerate=15/1";

impl Feed {
    /// Raw video into shared memory (`shmsink`): its death is an error for the reader,
    /// and while it is away every start fails.
    fn shm(socket: &std::path::Path) -> Self {
        Self {
            socket: Some(socket.to_owned()),
            child: feed::shm(socket, FEED_CAPS, 4_000_000).expect("the feed"),
        }
    }

    fn shm_source(socket: &std::path::Path) -> String {
        feed::shm_source(socket, FEED_CAPS)
    }

    /// Motion JPEG over RTP to a loopback UDP port, as an IP camera sends it: a frozen
    /// sender is a stall for the reader, nothing else.
    fn rtp_jpeg(port: u16) -> Self {
        let child = feed::spawn(
            FEED_CAPS,
            &[
                "jpegenc".into(),
                "quality=60".into(),
                "!".into(),
                "rtpjpegpay".into(),
                "!".into(),
                "udpsink".into(),
                "host=127.0.0.1".into(),
                format!("port={port}"),
            ],
        )
        .expect("the feed");
        Self {
            socket: None,
            child,
        }
    }

    fn rtp_jpeg_source(port: u16) -> String {
        format!(
            "udpsrc address=127.0.0.1 port={port} \
             caps=\\\"application/x-rtp,media=video,clock-rate=90000,encoding-name=JPEG,payload=26\\\" \
             ! rtpjpegdepay ! jpegdec"
        )
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's process id; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: as in `signal`; the group is the feed's own (process_group(0)).
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// A camera reading `source` (a `video.pipeline`) with a 1.5 s stall timeout and a 20 s
/// GOP, so the periodic IDR cannot stand in for the one after the source's return; and
/// a viewer decoding it.
async fn camera_on(source: &str) -> (Mosquitto, Edgecam, Viewer) {
    let (broker, cam) = online_camera_from("cam", |port| {
        let config = camera_config("cam", port, "").replace(
            "source = \"test\"\nwidth = 640\nheight = 360\nfps = 30",
            &format!(
                "source = \"pipeline\"\npipeline = \"{source}\"\nwidth = 320\nheight = 240\nfps = 15\n\
                 stall_timeout_ms = 1500\nkeyframe_interval_ms = 20000"
            ),
        );
        assert!(config.contains("source = \"pipeline\""), "{config}");
        config
    })
    .await;
    let viewer = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "plays the feed: {r:?}");
    (broker, cam, viewer)
}

/// Waits until the viewer decodes a frame of a keyframe newer than `r`'s, returning how
/// long that took, or fails the test with the report.
async fn resumed_after(viewer: &Viewer, r: &common::viewer::Report, what: &str) -> Duration {
    let t = Instant::now();
    let (k, d) = (r.keyframes, r.decoded_video);
    let (ok, now) = viewer
        .wait_until(Duration::from_secs(20), |n| {
            n.keyframes > k && n.decoded_video > d
        })
        .await;
    assert!(ok, "the viewer resumes after {what}: {now:?}");
    let r = viewer.report();
    assert!(
        r.ended.is_empty(),
        "the session lived through {what}: {r:?}"
    );
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_resume_with_an_idr_when_a_stalled_source_returns() {
    let port = common::free_port();
    let feed = Feed::rtp_jpeg(port);
    let (_broker, cam, viewer) = camera_on(&Feed::rtp_jpeg_source(port)).await;
    // The sender freezes: no error anywhere, just no frames. Capture restarts after
    // stall_timeout_ms and keeps waiting.
    feed.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen = viewer.report();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = viewer.report();
    assert!(
        r.video_frames <= frozen.video_frames + 1,
        "no frames while the feed is frozen: {} -> {}",
        frozen.video_frames,
        r.video_frames
    );
    feed.signal(libc::SIGCONT);
    let took = resumed_after(&viewer, &r, "a stall").await;
    eprintln!(
        "capture stall: the source's return → a new IDR decoded {} ms later",
        took.as_millis()
    );
    let log = cam.log_text();
    assert!(log.contains("capture failed (no video frame"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_resume_with_an_idr_when_a_dead_source_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("feed");
    let feed = Feed::shm(&socket);
    let (_broker, cam, viewer) = camera_on(&Feed::shm_source(&socket)).await;
    // The feed dies: capture errors, and every restart fails while it is away.
    feed.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = viewer.report();
    let _feed = Feed::shm(&socket);
    let took = resumed_after(&viewer, &r, "the feed's death").await;
    eprintln!(
        "capture failure: a new feed 6 s after the old one died → a new IDR decoded {} ms later",
        took.as_millis()
    );
    let log = cam.log_text();
    assert!(
        log.matches("capture failed (").count() >= 3,
        "the dead feed's restarts failed and were retried: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_whose_link_goes_down_and_up_reannounces_itself_and_its_viewer_recovers_by_ice_restart()
 {
    // The camera alone in a namespace, its one link to the host (broker, viewer) a veth
    // pair the test takes down and up, as a Wi-Fi drop or a router reboot would.
    let link = common::netns::HostLink::new().expect("namespace and veth (the suite runs as root)");
    let broker = Mosquitto::start_also_on(&link.host_ip);
    let config = camera_config("cam", broker.port, "")
        .replace(
            &format!("[signaling]\nbroker = \"mqtt://127.0.0.1:{}\"", broker.port),
            &format!(
                "[signaling]\nbroker = \"mqtt://{}:{}\"\nkeep_alive_s = 5",
                link.host_ip, broker.port
            ),
        )
        .replace(
            "udp_bind = [\"127.0.0.1\"]",
            &format!("udp_bind = [\"{}\"]", link.ns_ip),
        );
    assert!(
        config.contains("keep_alive_s = 5") && config.contains(&link.ns_ip),
        "{config}"
    );
    let cam = Edgecam::start_in(Some(&link.ns), Some(&config));
    wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    let viewer =
        Viewer::join_on(Endpoint::new(broker.port, "cam", "v1"), true, &link.host_ip).await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "plays over the link: {r:?}");

    link.set_up(false).expect("link down");
    let down = Instant::now();
    // The broker hears nothing for 1.5 keep-alives and publishes the Last Will.
    wait_status(broker.port, "cam", Duration::from_secs(20), |s| {
        s["state"] == "offline"
    })
    .await;
    let offline_after = down.elapsed();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    let r = viewer.report();
    link.set_up(true).expect("link up");
    let up = Instant::now();
    let status = wait_status(broker.port, "cam", Duration::from_secs(30), |s| {
        s["state"] == "online"
    })
    .await;
    let online_after = up.elapsed();
    assert_eq!(
        status["viewers"], 1,
        "the session outlived the outage: {status}"
    );

    // The link's addresses did not change, so the selected pair can come back by
    // itself; either way the session must carry media again.
    resumed_after(&viewer, &r, "the link's return").await;
    let resumed = up.elapsed();
    // As a browser does when its connection went through `disconnected`: an ICE restart
    // on the same session, answered, and media after it.
    let r = viewer.report();
    viewer.restart_ice().await;
    let end = Instant::now() + Duration::from_secs(10);
    while !cam.log_text().contains("renegotiation offer on v1") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, after) = viewer
        .wait_until(Duration::from_secs(10), |n| {
            n.decoded_video >= r.decoded_video + 30
        })
        .await;
    assert!(ok, "media after the ICE restart: {after:?}");
    eprintln!(
        "link down 10 s: Last Will (offline) {} ms after it went down; status online {} ms \
         after it came up; a new IDR decoded {} ms after it came up",
        offline_after.as_millis(),
        online_after.as_millis(),
        resumed.as_millis()
    );
    let log = cam.log_text();
    assert!(
        log.contains("renegotiation offer on v1"),
        "the ICE restart reached the camera"
    );
    assert_eq!(
        log.matches("new session").count(),
        1,
        "one session throughout"
    );
    assert!(after.ended.is_empty(), "no bye: {:?}", after.ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_manager_that_stops_reading_notifications_does_not_stall_the_camera() {
    // A notification socket nobody reads, as a wedged or busy service manager: a
    // datagram socket takes net.unix.max_dgram_qlen (10) datagrams, then blocks writers.
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind");
    let broker = Mosquitto::start();
    let path = sock_path.display().to_string();
    let _cam = Edgecam::start_env(
        None,
        Some(&camera_config("cam", broker.port, "")),
        &[("NOTIFY_SOCKET", path.as_str())],
    );
    wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    // Each join and each leave, once the status shows it, changes the status line:
    // about 20 notifications in all, where 11 fill the queue.
    for i in 0..7 {
        let v = Viewer::connect(broker.port, "cam", &format!("v{i}")).await;
        let (ok, r) = v
            .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 1)
            .await;
        assert!(ok, "viewer {i} plays: {r:?}");
        wait_status(broker.port, "cam", Duration::from_secs(10), |s| {
            s["viewers"] == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        v.bye().await;
        wait_status(broker.port, "cam", Duration::from_secs(10), |s| {
            s["viewers"] == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let mut queued = 0;
    while sock.recv(&mut buf).is_ok() {
        queued += 1;
    }
    assert!(
        queued >= 10,
        "the socket's queue filled: {queued} notifications"
    );
}
