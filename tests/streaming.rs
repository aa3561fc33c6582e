//! End to end over a real Mosquitto broker: the edgecam binary streams the test pattern
//! and tone to webrtc-rs viewers, whose H.264 and Opus decode in GStreamer.

mod common;

use common::viewer::{Viewer, wait_status};
use common::{Edgecam, Mosquitto, camera_config};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_decodable_h264_starting_at_an_idr_and_opus() {
    let broker = Mosquitto::start();
    let _cam = Edgecam::start(&camera_config("cam1", broker.port, ""));
    wait_status(broker.port, "cam1", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;

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
