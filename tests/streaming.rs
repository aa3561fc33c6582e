//! End to end over a real Mosquitto broker: the edgecam binary streams the test pattern
//! and tone to webrtc-rs viewers, whose H.264 and Opus decode in GStreamer.

mod common;

use common::camera_config;
use common::viewer::{Viewer, online_camera, online_camera_from, wait_status};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_decodable_h264_starting_at_an_idr_and_opus() {
    let (broker, _cam) = online_camera("cam1", "").await;

    let viewer = Viewer::connect(broker.port, "cam1", "viewer1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(20), |r| {
            r.decoded_video >= 30 && r.decoded_audio >= 25
        })
        .await;
    assert!(
        ok,
        "viewer did not decode 30 frames and 25 audio buffers: {r:?}"
    );
    assert_eq!(
        r.first_frame_idr_with_sps_pps,
        Some(true),
        "first frame must be an IDR with SPS/PPS"
    );
    let answer = r.answer.as_deref().unwrap_or_default();
    assert!(
        answer.contains("H264/90000"),
        "answer negotiates H.264: {answer}"
    );
    assert!(
        answer.contains("profile-level-id=42e01f"),
        "constrained baseline as emitted: {answer}"
    );
    assert!(
        answer.contains("opus/48000/2"),
        "answer negotiates Opus: {answer}"
    );
    assert!(answer.contains("a=sendonly"), "camera sends only: {answer}");
    assert!(r.ended.is_empty(), "no error or bye: {:?}", r.ended);

    // RTP timestamps come from PTS: at 30 fps consecutive frames are 3000 ticks apart.
    let ts = &r.video_timestamps;
    let deltas: Vec<u32> = ts.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let typical = deltas.iter().filter(|d| (2900..=3100).contains(*d)).count();
    assert!(
        typical * 10 >= deltas.len() * 9,
        "PTS-derived 90 kHz spacing: {deltas:?}"
    );

    let status = wait_status(broker.port, "cam1", Duration::from_secs(5), |s| {
        s["viewers"] == 1
    })
    .await;
    assert_eq!(status["maxViewers"], 10);
    assert_eq!(status["video"]["width"], 640);
    assert_eq!(status["audio"]["codec"], "opus");

    viewer.bye().await;
    wait_status(broker.port, "cam1", Duration::from_secs(5), |s| {
        s["viewers"] == 0
    })
    .await;
}

/// Config of a camera whose periodic IDR comes only every 60 s: any IDR a viewer sees
/// was forced.
fn long_gop_config(id: &str, port: u16) -> String {
    camera_config(id, port, "").replace(
        "bitrate_kbps = 800\n",
        "bitrate_kbps = 800\nkeyframe_interval_ms = 60000\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_on_join_with_a_one_minute_gop() {
    let (broker, _cam) = online_camera_from("gop", |port| long_gop_config("gop", port)).await;
    // Join well after the pipeline's first IDR.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let viewer = Viewer::connect(broker.port, "gop", "late").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(10), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "late joiner plays at once: {r:?}");
    assert_eq!(r.first_frame_idr_with_sps_pps, Some(true));
    let after_offer = r.first_frame_after_offer.expect("timed");
    assert!(
        after_offer < Duration::from_secs(5),
        "no wait for the 60 s GOP: {after_offer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pli_from_a_viewer_forces_a_fresh_idr() {
    let (broker, _cam) = online_camera_from("pli", |port| long_gop_config("pli", port)).await;
    let viewer = Viewer::connect(broker.port, "pli", "v").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(10), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "{r:?}");
    let keyframes = r.keyframes;
    tokio::time::sleep(Duration::from_millis(500)).await;
    viewer.send_pli().await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(3), |r| r.keyframes > keyframes)
        .await;
    assert!(ok, "PLI produced a fresh IDR: {r:?}");
}

#[test]
fn devices_lists_v4l2_and_alsa_as_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["devices", "--json"])
        .output()
        .expect("run edgecam devices");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["v4l2"].is_array() && v["alsa"].is_array(), "{v}");
    // This host has no camera and no sound card; the device lab checks real ones.
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .arg("devices")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("V4L2 capture devices:") && text.contains("ALSA capture PCMs:"),
        "{text}"
    );
}

#[test]
fn selftest_streams_the_test_source_through_the_encoder_to_a_loopback_viewer() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["selftest", "--test-source", "--seconds", "2", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run edgecam selftest");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}");
    let v = &report["viewer"];
    assert_eq!(v["state"], "connected", "{report}");
    assert_eq!(v["firstFrameIdrWithSpsPps"], true, "{report}");
    // 2 s at 30 fps; a broken path delivers none, a slow machine somewhat fewer.
    assert!(v["videoFrames"].as_u64().unwrap_or(0) >= 30, "{report}");
    assert!(v["opusPackets"].as_u64().unwrap_or(0) >= 50, "{report}");
    assert!(
        report["captureToRtp"]["count"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );

    // A source that cannot run is "could not run" (2), not a pass.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("missing-camera.toml");
    std::fs::write(
        &config,
        "[video]\nsource = \"v4l2\"\ndevice = \"/dev/video-none\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "selftest",
            "--seconds",
            "1",
        ])
        .output()
        .expect("run edgecam selftest");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no report without a run: {out:?}");
}

/// The port of a `candidate:` line (RFC 8839 §5.1: foundation, component, transport,
/// priority, address, port, …) and its transport.
fn candidate_port(line: &str) -> (String, u16) {
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[2].to_ascii_lowercase(), f[5].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_sockets_stay_in_the_port_range_and_ice_tcp_is_offered() {
    let first = 46_000 + u16::try_from(std::process::id() % 500).unwrap() * 4;
    let extra = format!(
        "port_range = [{first}, {}]\ntcp_bind = [\"127.0.0.1\"]\n",
        first + 3
    );
    let (broker, _cam) = online_camera("ports", &extra).await;
    let a = Viewer::connect(broker.port, "ports", "pa").await;
    let b = Viewer::connect(broker.port, "ports", "pb").await;
    let mut used = Vec::new();
    for v in [&a, &b] {
        let (ok, r) = v
            .wait_until(Duration::from_secs(20), |r| r.decoded_video >= 10)
            .await;
        assert!(ok, "plays over a port from the range: {r:?}");
        // The answer carries the host candidates (docs/signaling.md), and they are
        // trickled as well, for viewers that only read the trickle. (webrtc-rs writes a
        // component-2 copy of each line into the SDP too; with rtcp-mux it goes unused.)
        let answer = r.answer.as_deref().expect("answer");
        let in_answer: Vec<&str> = answer
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a="))
            .filter(|l| l.starts_with("candidate:") && l.split_whitespace().nth(1) == Some("1"))
            .collect();
        assert!(
            in_answer
                .iter()
                .any(|c| c.contains(" typ host") && candidate_port(c).0 == "udp"),
            "a UDP host candidate in the answer: {answer}"
        );
        for c in &in_answer {
            assert!(
                r.remote_candidates.iter().any(|t| t == c),
                "{c} from the answer is trickled too: {:?}",
                r.remote_candidates
            );
        }
        // Active ICE-TCP candidates carry the discard port 9 (RFC 6544 §4.5): no socket.
        let ports: Vec<(String, u16)> = r
            .remote_candidates
            .iter()
            .filter(|c| !c.contains("tcptype active"))
            .map(|c| candidate_port(c))
            .collect();
        assert!(
            ports.iter().any(|(t, _)| t == "tcp"),
            "a passive ICE-TCP candidate (RFC 6544): {ports:?}"
        );
        for (_, port) in &ports {
            assert!(
                (first..=first + 3).contains(port),
                "{port} outside range: {ports:?}"
            );
        }
        used.push(
            ports
                .iter()
                .find(|(t, _)| t == "udp")
                .expect("udp candidate")
                .1,
        );
    }
    assert_ne!(used[0], used[1], "each session has its own port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_1to1_address_is_advertised() {
    // 127.0.0.2 stands in for the public address of a 1:1 NAT (all traffic stays on
    // loopback); as srflx it is added next to the host candidate.
    let extra = "nat_1to1_ips = [\"127.0.0.2\"]\nnat_1to1_candidate_type = \"srflx\"\n";
    let (broker, _cam) = online_camera("nat11", extra).await;
    let v = Viewer::connect(broker.port, "nat11", "n1").await;
    let (ok, r) = v
        .wait_until(Duration::from_secs(20), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "{r:?}");
    assert!(
        r.remote_candidates
            .iter()
            .any(|c| c.contains(" 127.0.0.2 ") && c.contains("typ srflx")),
        "public address advertised as srflx: {:?}",
        r.remote_candidates
    );
    let answer = r.answer.as_deref().expect("answer");
    assert!(
        answer.lines().any(|l| l.starts_with("a=candidate:")
            && l.contains(" 127.0.0.2 ")
            && l.contains("typ srflx")),
        "the answer's candidates pass through NAT 1:1 like the trickled ones: {answer}"
    );
}
