//! The endpoints that fit edgecam into other tools, each on a real camera:
//! - `GET /metrics` with a real viewer: the OpenMetrics text parses with a Prometheus
//!   text-format parser nobody here wrote (`prometheus-parse`), and the figures follow
//!   what happened (a viewer joins, plays and leaves);
//! - `GET /snapshot.jpg`: a JPEG that a decoder nobody here wrote (`jpeg-decoder`)
//!   decodes at the stream's size, from a branch that encodes nothing while idle;
//! - the `control` data channel, from a real webrtc-rs viewer: each command and its
//!   reply, refusals, and a flood held to its budget while the video plays on.

mod common;

use common::viewer::{Viewer, online_camera_from};
use common::{camera_config, free_port};
use prometheus_parse::{Scrape, Value};
use std::time::Duration;

/// `GET http://127.0.0.1:{port}{path}`: status, headers (lower-cased) and body.
fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_file = dir.path().join("body");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "-", "-o"])
        .arg(&body_file)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, std::fs::read(&body_file).unwrap_or_default())
}

fn scrape(port: u16) -> Scrape {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "-"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample named `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(b) => b.last().map(|c| c.count),
            Value::Summary(_) => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_viewer_joining_playing_and_leaving() {
    let http = free_port();
    let (broker, _cam) = online_camera_from("cam", |port| {
        camera_config("cam", port, "").replace(
            "[http]\nenabled = false",
            &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
        )
    })
    .await;
    let idle = scrape(http);
    assert_eq!(value(&idle, "edgecam_mqtt_connected", &[]), Some(1.0));
    assert_eq!(value(&idle, "edgecam_mqtt_connects_total", &[]), Some(1.0));
    assert_eq!(value(&idle, "edgecam_capture_running", &[]), Some(1.0));
    assert_eq!(
        value(&idle, "edgecam_video_frames_sent_total", &[]),
        Some(0.0)
    );

    let viewer = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 30)
        .await;
    assert!(ok, "plays: {r:?}");
    // The camera loop refreshes its session view once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let live = scrape(http);
    // One session, over a host candidate of the camera's; the viewer's side may be
    // `host` or not yet known (`?`, peer-reflexive) depending on which arrived first,
    // its trickled candidate or its first check.
    let viewers: Vec<_> = live
        .samples
        .iter()
        .filter(|x| x.metric == "edgecam_viewers")
        .collect();
    assert_eq!(viewers.len(), 1, "{viewers:?}");
    assert_eq!(viewers[0].labels.get("frontend"), Some("mqtt"));
    assert!(
        viewers[0]
            .labels
            .get("candidate_pair")
            .is_some_and(|p| p.starts_with("host/") && p.ends_with(" udp")),
        "{viewers:?}"
    );
    assert!(
        matches!(viewers[0].value, Value::Gauge(v) if v == 1.0),
        "{viewers:?}"
    );
    let sent = value(&live, "edgecam_video_frames_sent_total", &[]).unwrap_or(0.0);
    assert!(sent >= 30.0, "frames sent {sent}");
    assert!(value(&live, "edgecam_sent_bytes_total", &[]).unwrap_or(0.0) > 10_000.0);
    let encoded = value(&live, "edgecam_video_frames_encoded_total", &[]).unwrap_or(0.0);
    assert!(encoded >= sent, "encoded {encoded} < sent {sent}");
    let latency = live
        .samples
        .iter()
        .find(|x| x.metric == "edgecam_capture_to_rtp_latency_seconds")
        .expect("the latency histogram");
    match &latency.value {
        Value::Histogram(buckets) => {
            let total = buckets.last().map_or(0.0, |c| c.count);
            assert!(total >= 30.0, "{buckets:?}");
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative: {buckets:?}"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }

    viewer.bye().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(http);
    assert!(
        !after.samples.iter().any(|x| x.metric == "edgecam_viewers"),
        "no open session"
    );
    assert!(
        value(&after, "edgecam_video_frames_sent_total", &[]).unwrap_or(0.0) >= sent,
        "a counter keeps what ended sessions sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_current_picture_and_costs_nothing_while_idle() {
    let http = free_port();
    let (_broker, _cam) = online_camera_from("cam", |port| {
        camera_config("cam", port, "").replace(
            "[http]\nenabled = false",
            &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
        )
    })
    .await;
    let encoded = |s: &Scrape| value(s, "edgecam_snapshots_encoded_total", &[]).unwrap_or(-1.0);
    // Idle: the branch has encoded nothing.
    assert_eq!(encoded(&scrape(http)), 0.0);

    let started = std::time::Instant::now();
    let (status, head, jpeg) = get(http, "/snapshot.jpg");
    let took = started.elapsed();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: image/jpeg"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let mut decoder = jpeg_decoder::Decoder::new(jpeg.as_slice());
    let pixels = decoder.decode().expect("a JPEG that decodes");
    let info = decoder.info().expect("JPEG info");
    assert_eq!((info.width, info.height), (640, 360), "the stream's size");
    assert_eq!(pixels.len(), 640 * 360 * 3);
    // Not a blank picture: the SMPTE bars span many grey levels.
    let levels: std::collections::BTreeSet<u8> = pixels.iter().step_by(97).copied().collect();
    assert!(levels.len() > 20, "{} distinct levels", levels.len());
    println!(
        "snapshot: {} bytes, {}x{}, {} ms (curl, debug build)",
        jpeg.len(),
        info.width,
        info.height,
        took.as_millis()
    );

    // Served once, the branch closes again: nothing more is encoded while idle.
    let after_one = encoded(&scrape(http));
    assert!((1.0..=3.0).contains(&after_one), "{after_one}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(encoded(&scrape(http)), after_one, "the branch is closed");

    // A second snapshot, past the 200 ms freshness bound, is a new picture.
    let (status, _, second) = get(http, "/snapshot.jpg");
    assert_eq!(status, 200);
    assert_ne!(second, jpeg, "the moving pattern changed");
    let s = scrape(http);
    assert!(encoded(&s) > after_one);
    assert_eq!(value(&s, "edgecam_snapshots_served_total", &[]), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_channel_answers_each_command_and_holds_a_flood_to_its_budget() {
    let (broker, _cam) = online_camera_from("cam", |port| camera_config("cam", port, "")).await;
    let viewer = Viewer::connect_with_control(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "plays: {r:?}");

    let stats = viewer.control(r#"{"id":1,"cmd":"stats"}"#).await.reply;
    assert_eq!(stats["id"], 1);
    assert_eq!(stats["ok"], true, "{stats}");
    assert!(
        stats["stats"]["videoFrames"].as_u64().unwrap_or(0) >= 10,
        "{stats}"
    );

    let started = std::time::Instant::now();
    let snap = viewer.control(r#"{"id":"s","cmd":"snapshot"}"#).await;
    let took = started.elapsed();
    assert_eq!(snap.reply["ok"], true, "{}", snap.reply);
    assert_eq!(snap.reply["type"], "image/jpeg");
    assert_eq!(
        snap.reply["bytes"].as_u64(),
        Some(snap.payload.len() as u64),
        "every announced chunk arrived"
    );
    let mut decoder = jpeg_decoder::Decoder::new(snap.payload.as_slice());
    decoder.decode().expect("a JPEG that decodes");
    let info = decoder.info().expect("JPEG info");
    assert_eq!((info.width, info.height), (640, 360));
    println!(
        "data channel snapshot: {} bytes in {} chunks, {} ms",
        snap.payload.len(),
        snap.reply["chunks"],
        took.as_millis()
    );

    let before = viewer.report().keyframes;
    let kf = viewer.control(r#"{"id":3,"cmd":"keyframe"}"#).await.reply;
    assert_eq!(kf["ok"], true, "{kf}");
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(3), |r| r.keyframes > before)
        .await;
    assert!(ok, "an IDR follows the request: {r:?}");

    let ptz = viewer
        .control(r#"{"id":4,"cmd":"ptz","pan":5}"#)
        .await
        .reply;
    assert_eq!(
        (ptz["ok"].clone(), ptz["error"].clone()),
        (false.into(), "unsupported".into())
    );
    let unknown = viewer.control(r#"{"id":5,"cmd":"reboot"}"#).await.reply;
    assert_eq!(unknown["error"], "unknown-command", "{unknown}");
    let junk = viewer.control("{not json").await.reply;
    assert_eq!(junk["error"], "bad-request", "{junk}");

    // A flood: once the budget is spent one `rate-limited` reply comes, then silence.
    // The first reply that is not `ok` must say so.
    let mut refused = None;
    for i in 0..20 {
        let reply = viewer
            .control(&format!(r#"{{"id":{},"cmd":"stats"}}"#, 100 + i))
            .await
            .reply;
        if reply["ok"] == false {
            refused = Some((i, reply));
            break;
        }
    }
    let (after, reply) = refused.expect("the budget runs out within 20 requests");
    assert_eq!(reply["error"], "rate-limited", "{reply}");
    assert!(after >= 1, "some requests were within budget");
    // (The silence after it is timing-bound, so `peer::control`'s unit tests check it
    // in simulated time.)
    // The video plays on meanwhile.
    let frames = viewer.report().decoded_video;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(3), |r| r.decoded_video >= frames + 15)
        .await;
    assert!(ok, "video keeps playing: {r:?}");
    // With the budget refilled, commands run again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = viewer.control(r#"{"id":9,"cmd":"stats"}"#).await.reply;
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["id"], 9, "{again}");
    viewer.bye().await;
}
