//! `GET /metrics` on a real camera with a real viewer: the OpenMetrics text parses with
//! a Prometheus text-format parser nobody here wrote (`prometheus-parse`), and the
//! figures follow what happened (a viewer joins, plays and leaves).

mod common;

use common::viewer::{Viewer, online_camera_from};
use common::{camera_config, free_port};
use prometheus_parse::{Scrape, Value};
use std::time::Duration;

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
