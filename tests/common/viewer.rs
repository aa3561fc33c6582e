//! A webrtc-rs test viewer speaking the signaling contract over MQTT (rumqttc), and a
//! raw signaling client for bad-input tests. The WebRTC side is edgecam's
//! `peer::probe::ProbeViewer` (depacketizes H.264 into access units, counts frames);
//! access units are decoded by `openh264dec`, Opus packets by `opusdec`.

use bytes::Bytes;
use edgecam::peer::probe::{ProbeOptions, ProbeViewer};
use edgecam::signaling::protocol::CandidateInit;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A raw MQTT client on one session's topics.
pub struct Signal {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    /// `…/to-camera` topic of this session.
    pub to_camera: String,
    task: tokio::task::JoinHandle<()>,
}

impl Signal {
    /// Connects as client `session`, subscribes to the session's `to-viewer` topic (and
    /// `extra` filters) and waits for the subscriptions to be acknowledged.
    pub async fn connect(port: u16, camera: &str, session: &str, extra: &[&str]) -> Self {
        let mut opts = MqttOptions::new(session, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let to_viewer = format!("edgecam/{camera}/session/{session}/to-viewer");
        let to_camera = format!("edgecam/{camera}/session/{session}/to-camera");
        let mut filters = vec![to_viewer];
        filters.extend(extra.iter().map(|s| (*s).to_owned()));
        for f in &filters {
            client
                .subscribe(f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for _ in &filters {
            tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
                .await
                .expect("suback in time");
        }
        Self {
            client,
            rx,
            to_camera,
            task,
        }
    }

    /// Publishes raw bytes on this session's `to-camera` topic.
    pub async fn publish_raw(&self, payload: impl Into<Vec<u8>>) {
        self.publish_to(&self.to_camera.clone(), payload).await;
    }

    /// Publishes raw bytes on any topic.
    pub async fn publish_to(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// Publishes a JSON message on `to-camera`.
    pub async fn send(&self, msg: &Value) {
        self.publish_raw(serde_json::to_vec(msg).unwrap()).await;
    }

    /// The next message (topic, JSON) within `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Option<(String, Value)> {
        let (topic, payload) = tokio::time::timeout(limit, self.rx.recv()).await.ok()??;
        Some((
            topic,
            serde_json::from_slice(&payload).unwrap_or(Value::Null),
        ))
    }

    /// The next message on a topic ending with `suffix` within `limit`, skipping others.
    pub async fn recv_on(&mut self, suffix: &str, limit: Duration) -> Option<Value> {
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let (topic, v) = self.recv(left).await?;
            if topic.ends_with(suffix) {
                return Some(v);
            }
        }
        None
    }

    /// The next `error` on `to-viewer`; panics if another message or none comes first.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self
            .recv_on("to-viewer", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no reply, expected error {code}"));
        assert_eq!(v["type"], "error", "expected error {code}, got {v}");
        assert_eq!(v["code"], code, "got {v}");
        assert!(v["message"].is_string(), "error has a message: {v}");
        v
    }

    /// Asserts nothing arrives on `to-viewer` for `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Some(v) = self.recv_on("to-viewer", window).await {
            panic!("expected silence, got {v}");
        }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the retained status of `camera` to satisfy `pred`.
pub async fn wait_status(
    port: u16,
    camera: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let watcher = format!("w{}", rand::random::<u32>());
    let topic = format!("edgecam/{camera}/status");
    let mut sig = Signal::connect(port, camera, &watcher, &[&topic]).await;
    let end = Instant::now() + limit;
    let mut last = Value::Null;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match sig.recv_on("/status", left).await {
            Some(v) if pred(&v) => return v,
            Some(v) => last = v,
            None => break,
        }
    }
    panic!("status of {camera} never matched; last {last}");
}

/// Starts a Mosquitto and a test camera `id` on it (with `extra` appended to the
/// `[webrtc]` section of [`camera_config`](super::camera_config)), and waits until the
/// camera's retained status says it is online.
pub async fn online_camera(id: &str, extra: &str) -> (super::Mosquitto, super::Edgecam) {
    online_camera_from(id, |port| super::camera_config(id, port, extra)).await
}

/// As [`online_camera`], with the whole config built by `config` from the broker port.
pub async fn online_camera_from(
    id: &str,
    config: impl FnOnce(u16) -> String,
) -> (super::Mosquitto, super::Edgecam) {
    let broker = super::Mosquitto::start();
    let cam = super::Edgecam::start(&config(broker.port));
    wait_status(broker.port, id, Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    (broker, cam)
}

/// What a test viewer saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Complete access units received.
    pub video_frames: u64,
    /// Whether the first access unit was an IDR with SPS and PPS.
    pub first_frame_idr_with_sps_pps: Option<bool>,
    /// Frames `openh264dec` produced.
    pub decoded_video: u64,
    /// Opus packets received.
    pub opus_packets: u64,
    /// Buffers `opusdec` produced.
    pub decoded_audio: u64,
    /// Time from publishing the offer to the first complete IDR.
    pub first_frame_after_offer: Option<Duration>,
    /// `error` or `bye` messages received.
    pub ended: Vec<Value>,
    /// Peer connection state.
    pub state: Option<String>,
    /// Answer SDP.
    pub answer: Option<String>,
    /// RTP timestamps of the first video frames (for PTS-derived spacing checks).
    pub video_timestamps: Vec<u32>,
    /// Access units that were IDRs with SPS/PPS.
    pub keyframes: u64,
    /// `candidate:` lines the camera trickled.
    pub remote_candidates: Vec<String>,
}

/// GStreamer decoders the viewer feeds.
#[derive(Clone)]
struct Decoders {
    video: gst_app::AppSrc,
    audio: gst_app::AppSrc,
    _pipelines: Arc<Vec<gst::Pipeline>>,
}

impl Decoders {
    fn new(video_count: Arc<AtomicU64>, audio_count: Arc<AtomicU64>, decode: bool) -> Self {
        gst::init().expect("gst init");
        let (video_chain, audio_chain) = if decode {
            ("h264parse ! openh264dec ! ", "opusdec ! ")
        } else {
            ("", "")
        };
        let make = |desc: &str, count: Arc<AtomicU64>| {
            let p = gst::parse::launch(desc)
                .unwrap()
                .downcast::<gst::Pipeline>()
                .unwrap();
            let sink = p
                .by_name("sink")
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let _ = s.pull_sample();
                        count.fetch_add(1, Ordering::Relaxed);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            p.set_state(gst::State::Playing).unwrap();
            let src = p
                .by_name("src")
                .unwrap()
                .downcast::<gst_app::AppSrc>()
                .unwrap();
            (p, src)
        };
        let (vp, video) = make(
            &format!(
                "appsrc name=src is-live=true do-timestamp=true format=time \
                 caps=video/x-h264,stream-format=byte-stream,alignment=au \
                 ! {video_chain}appsink name=sink sync=false"
            ),
            video_count,
        );
        let (ap, audio) = make(
            &format!(
                "appsrc name=src is-live=true do-timestamp=true format=time \
                 caps=audio/x-opus,channel-mapping-family=0,channels=2,rate=48000 \
                 ! {audio_chain}appsink name=sink sync=false"
            ),
            audio_count,
        );
        Self {
            video,
            audio,
            _pipelines: Arc::new(vec![vp, ap]),
        }
    }

    fn push_video(&self, frame: Vec<u8>) {
        let _ = self.video.push_buffer(gst::Buffer::from_slice(frame));
    }

    fn push_audio(&self, packet: Bytes) {
        let _ = self.audio.push_buffer(gst::Buffer::from_slice(packet));
    }
}

impl Drop for Decoders {
    fn drop(&mut self) {
        if Arc::strong_count(&self._pipelines) == 1 {
            for p in self._pipelines.iter() {
                let _ = p.set_state(gst::State::Null);
            }
        }
    }
}

/// A webrtc-rs viewer on one session: edgecam's own [`ProbeViewer`] with MQTT
/// signaling per the contract and GStreamer decoders behind it.
pub struct Viewer {
    /// Session id.
    pub session: String,
    probe: Arc<ProbeViewer>,
    signaling: Arc<Mutex<Signaling>>,
    video_decoded: Arc<AtomicU64>,
    audio_decoded: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    signal_tx: AsyncClient,
    to_camera: String,
    _decoders: Decoders,
}

/// What arrived over signaling.
#[derive(Default)]
struct Signaling {
    ended: Vec<Value>,
    answer: Option<String>,
    remote_candidates: Vec<String>,
}

impl Viewer {
    /// Connects to `camera` through the broker on `port` as `session`: subscribes,
    /// offers recvonly video + audio, and trickles candidates both ways. Received media
    /// is decoded.
    pub async fn connect(port: u16, camera: &str, session: &str) -> Self {
        Self::connect_with(port, camera, session, true).await
    }

    /// As [`Viewer::connect`]; with `decode` false, frames are only depacketized and
    /// counted (a light load viewer for benchmarks).
    pub async fn connect_with(port: u16, camera: &str, session: &str, decode: bool) -> Self {
        let mut signal = Signal::connect(port, camera, session, &[]).await;
        let video_decoded = Arc::new(AtomicU64::new(0));
        let audio_decoded = Arc::new(AtomicU64::new(0));
        let decoders = Decoders::new(video_decoded.clone(), audio_decoded.clone(), decode);
        let (video_sink, audio_sink) = (decoders.clone(), decoders.clone());
        let (probe, mut local_rx) = ProbeViewer::new(ProbeOptions {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            on_video: Some(Box::new(move |au| video_sink.push_video(au))),
            on_audio: Some(Box::new(move |p| audio_sink.push_audio(p))),
            ..ProbeOptions::default()
        })
        .await
        .expect("viewer peer connection");
        let probe = Arc::new(probe);
        let sdp = probe.create_offer().await.expect("offer");
        signal.send(&json!({"type": "offer", "sdp": sdp})).await;

        let to_camera = signal.to_camera.clone();
        let client = signal.client.clone();
        let signaling = Arc::new(Mutex::new(Signaling::default()));
        let mut tasks = Vec::new();
        {
            let client = client.clone();
            let topic = to_camera.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(c) = local_rx.recv().await {
                    let msg = json!({"type": "candidate", "candidate": c});
                    let _ = client
                        .publish(
                            &topic,
                            QoS::AtLeastOnce,
                            false,
                            serde_json::to_vec(&msg).unwrap(),
                        )
                        .await;
                }
            }));
        }
        {
            let probe = probe.clone();
            let signaling = signaling.clone();
            tasks.push(tokio::spawn(async move {
                while let Some((_, msg)) = signal.recv(Duration::from_secs(3600)).await {
                    match msg["type"].as_str() {
                        Some("answer") => {
                            let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
                            signaling.lock().unwrap().answer = Some(sdp.clone());
                            probe.apply_answer(sdp).await.expect("apply answer");
                        }
                        Some("candidate") => {
                            let Ok(c) =
                                serde_json::from_value::<CandidateInit>(msg["candidate"].clone())
                            else {
                                continue;
                            };
                            signaling
                                .lock()
                                .unwrap()
                                .remote_candidates
                                .push(c.candidate.clone());
                            let _ = probe.add_candidate(Some(c)).await;
                        }
                        Some("error") | Some("bye") => signaling.lock().unwrap().ended.push(msg),
                        _ => {}
                    }
                }
            }));
        }
        Self {
            session: session.to_owned(),
            probe,
            signaling,
            video_decoded,
            audio_decoded,
            tasks,
            signal_tx: client,
            to_camera,
            _decoders: decoders,
        }
    }

    /// Sends an RTCP Picture Loss Indication (RFC 4585 §6.3.1) for the video track.
    pub async fn send_pli(&self) {
        self.probe.send_pli().await.expect("write PLI");
    }

    /// A copy of what the viewer saw so far.
    pub fn report(&self) -> Report {
        let p = self.probe.report();
        let s = self.signaling.lock().unwrap();
        Report {
            video_frames: p.video_frames,
            first_frame_idr_with_sps_pps: p.first_frame_idr_with_sps_pps,
            decoded_video: self.video_decoded.load(Ordering::Relaxed),
            opus_packets: p.opus_packets,
            decoded_audio: self.audio_decoded.load(Ordering::Relaxed),
            first_frame_after_offer: p.first_frame_after_offer,
            ended: s.ended.clone(),
            state: p.state,
            answer: s.answer.clone(),
            video_timestamps: p.video_timestamps,
            keyframes: p.keyframes,
            remote_candidates: s.remote_candidates.clone(),
        }
    }

    /// Polls the report until `pred` holds, at most `limit`; returns the last report.
    pub async fn wait_until(
        &self,
        limit: Duration,
        pred: impl Fn(&Report) -> bool,
    ) -> (bool, Report) {
        let end = Instant::now() + limit;
        loop {
            let r = self.report();
            if pred(&r) {
                return (true, r);
            }
            if Instant::now() >= end {
                return (false, r);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `bye` and closes the peer connection.
    pub async fn bye(&self) {
        let _ = self
            .signal_tx
            .publish(
                &self.to_camera,
                QoS::AtLeastOnce,
                false,
                br#"{"type":"bye"}"#.to_vec(),
            )
            .await;
        self.probe.close().await;
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
