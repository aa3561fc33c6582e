//! Camera lifecycle against a real broker: graceful shutdown, unclean death (Last Will),
//! and a broker that goes away and comes back while a viewer keeps watching.

mod common;

use common::viewer::{Viewer, online_camera, wait_status};
use common::{Edgecam, Mosquitto, camera_config};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_bye_to_viewers_and_goes_offline() {
    let (broker, mut cam) = online_camera("cam", "").await;
    let viewer = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, _) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok);
    // A healthy start reports the first frame as such: READY=1 and the status line
    // follow it at once, never a "stall" in between.
    assert!(
        !cam.log_text().contains("capture stalled"),
        "{}",
        cam.log_text()
    );
    let t = Instant::now();
    let status = cam
        .stop(Duration::from_secs(8))
        .expect("exits within the deadline");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "graceful shutdown took {:?}",
        t.elapsed()
    );
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(5), |r| !r.ended.is_empty())
        .await;
    assert!(ok, "viewer told: {r:?}");
    assert_eq!(r.ended[0]["type"], "bye");
    assert_eq!(r.ended[0]["reason"], "shutdown");
    let offline = wait_status(broker.port, "cam", Duration::from_secs(5), |s| {
        s["state"] == "offline"
    })
    .await;
    assert_eq!(
        offline,
        serde_json::json!({"protocol": 1, "state": "offline", "camera": "cam"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_death_fires_the_last_will() {
    let (broker, mut cam) = online_camera("cam", "").await;
    cam.kill();
    let offline = wait_status(broker.port, "cam", Duration::from_secs(10), |s| {
        s["state"] == "offline"
    })
    .await;
    assert_eq!(offline["protocol"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_playing_while_the_broker_is_away_and_signaling_recovers() {
    let broker = Mosquitto::start();
    let (port, ws_port) = (broker.port, broker.ws_port);
    let _cam = Edgecam::start(&camera_config("cam", port, ""));
    wait_status(port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    let viewer = Viewer::connect(port, "cam", "v1").await;
    let (ok, _) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok);

    drop(broker);
    let before = viewer.report().video_frames;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = viewer.report().video_frames;
    assert!(
        during >= before + 60,
        "media flowed while the broker was away: {before} → {during}"
    );

    // Back on the same port: the camera reconnects, resubscribes and republishes status.
    let _broker = Mosquitto::start_on(port, ws_port);
    wait_status(port, "cam", Duration::from_secs(40), |s| {
        s["state"] == "online" && s["viewers"] == 1
    })
    .await;
    let second = Viewer::connect(port, "cam", "v2").await;
    let (ok, r) = second
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(
        ok,
        "a new viewer can join after the broker came back: {r:?}"
    );
    assert!(
        viewer.report().ended.is_empty(),
        "the first session survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_config_and_refuses_an_invalid_one() {
    let broker = Mosquitto::start();
    let config = |name: &str| {
        camera_config("cam", broker.port, "")
            .replace("[camera]\n", &format!("[camera]\nname = \"{name}\"\n"))
    };
    let cam = Edgecam::start(&config("Before"));
    wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online" && s["name"] == "Before"
    })
    .await;

    // An invalid file is refused; the camera keeps running as it was.
    cam.rewrite_config(&config("Broken").replace("fps = 30", "fps = 0"));
    cam.hangup();
    let end = Instant::now() + Duration::from_secs(10);
    while !cam.log_text().contains("keeping the running configuration") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cam.log_text().contains("video.fps"), "{}", cam.log_text());
    let viewer = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "still streaming after a refused reload: {r:?}");

    // A valid one replaces it: viewers are told, the new settings are live.
    cam.rewrite_config(&config("After"));
    cam.hangup();
    let status = wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online" && s["name"] == "After"
    })
    .await;
    assert_eq!(status["name"], "After");
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(10), |r| !r.ended.is_empty())
        .await;
    assert!(ok && r.ended[0]["reason"] == "shutdown", "{r:?}");
    let again = Viewer::connect(broker.port, "cam", "v2").await;
    let (ok, r) = again
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "a viewer can watch after the reload: {r:?}");
    assert!(cam.log_text().contains("reloading"), "{}", cam.log_text());
}

/// Waits (at most 10 s) until `needle` occurs `n` times in the camera's log.
async fn wait_log_count(cam: &Edgecam, needle: &str, n: usize) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cam.log_text().matches(needle).count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Reload into files that parse but cannot start on this machine: a video device that
/// does not exist, an HTTP address another program holds. Each is refused before the
/// running camera is touched, and a watching viewer never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_into_a_config_that_cannot_start_keeps_the_camera_streaming() {
    let broker = Mosquitto::start();
    let good = camera_config("cam", broker.port, "");
    let notify = NotifySocket::new();
    let cam = Edgecam::start_env(None, Some(&good), &[("NOTIFY_SOCKET", notify.path())]);
    wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    let viewer = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "watching before the reloads: {r:?}");

    let kept = "keeping the running configuration";
    let no_device = good.replace(
        "source = \"test\"\nwidth",
        "source = \"v4l2\"\ndevice = \"/dev/video-edgecam-missing\"\nwidth",
    );
    assert_ne!(no_device, good);
    cam.rewrite_config(&no_device);
    cam.hangup();
    assert!(wait_log_count(&cam, kept, 1).await, "{}", cam.log_text());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let busy_http = good.replace(
        "[http]\nenabled = false\n",
        &format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    assert_ne!(busy_http, good);
    cam.rewrite_config(&busy_http);
    cam.hangup();
    assert!(wait_log_count(&cam, kept, 2).await, "{}", cam.log_text());
    let log = cam.log_text();
    assert!(log.contains("v4l2"), "the device is named: {log}");
    assert!(
        log.contains(&format!("http.listen 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(
        !log.contains("reloading: restarting"),
        "nothing restarted: {log}"
    );

    let before = viewer.report().video_frames;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(10), |r| r.video_frames >= before + 30)
        .await;
    assert!(ok, "the viewer kept receiving frames: {r:?}");
    assert!(r.ended.is_empty(), "no bye, no error: {:?}", r.ended);
    drop(taken);
    let refused: Vec<String> = notify
        .messages()
        .into_iter()
        .filter(|m| m.contains("STATUS=reload refused"))
        .collect();
    assert_eq!(refused.len(), 2, "systemd is told each time: {refused:?}");
    assert!(
        refused[1].contains("http.listen")
            && refused[1].contains("running the previous configuration"),
        "{refused:?}"
    );
}

/// A systemd notification socket (`NOTIFY_SOCKET`, sd_notify(3)) that collects what
/// the camera sends, read by a thread of its own so the camera never blocks on it.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = messages.clone();
        // Ends with the test process; reads one datagram at a time.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Self {
            path,
            messages,
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}
