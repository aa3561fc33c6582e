//! The suite's test viewer: the testkit's [`ProbeSession`] (edgecam's probe viewer
//! signaling per the contract over MQTT) with GStreamer decoders behind it, access
//! units decoded by `openh264dec`, Opus packets by `opusdec`. The raw signaling client
//! for bad-input tests is the testkit's [`Signal`].

use bytes::Bytes;
use edgecam::peer::probe::{ControlReply, ProbeOptions};
use edgecam_testkit::signal::ProbeSession;
pub use edgecam_testkit::signal::Signal;
#[allow(unused_imports)] // not every test crate signs
pub use edgecam_testkit::signal::{Endpoint, Invitation};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// Whether the first video RTP packet belonged to an IDR (robust to lost packets).
    pub first_packet_keyframe: Option<bool>,
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
    /// Camera messages dropped for a missing or wrong signature (invite mode).
    pub rejected: Vec<Value>,
    /// `candidate:` lines the camera trickled.
    pub remote_candidates: Vec<String>,
}

/// `frames` 20 ms Opus packets of a sine tone of `hz`, encoded as fast as GStreamer can.
fn opus_tone(hz: u32, frames: u32) -> Vec<Bytes> {
    gst::init().expect("gst init");
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc wave=sine volume=0.5 freq={hz} samplesperbuffer=960 num-buffers={frames} \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc frame-size=20 bitrate=32000 \
         ! appsink name=sink sync=false"
    ))
    .expect("tone pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    pipeline
        .set_state(gst::State::Playing)
        .expect("tone encodes");
    let mut packets = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if let Some(map) = sample
            .buffer_owned()
            .and_then(|b| b.into_mapped_buffer_readable().ok())
        {
            packets.push(Bytes::from_owner(map));
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    packets
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

/// A webrtc-rs viewer on one session: a testkit [`ProbeSession`] with GStreamer
/// decoders behind it.
pub struct Viewer {
    /// Session id.
    pub session: String,
    inner: ProbeSession,
    video_decoded: Arc<AtomicU64>,
    audio_decoded: Arc<AtomicU64>,
    _decoders: Decoders,
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
        Self::join(Endpoint::new(port, camera, session), decode).await
    }

    /// A viewer on any [`Endpoint`] (e.g. one with an invitation), decoding or not.
    pub async fn join(ep: Endpoint, decode: bool) -> Self {
        Self::join_on(ep, decode, "127.0.0.1").await
    }

    /// As [`Viewer::join`], with its ICE candidates on `ip` (an address of a link to a
    /// namespace the test created) instead of loopback.
    pub async fn join_on(ep: Endpoint, decode: bool, ip: &str) -> Self {
        Self::join_full(ep, decode, ip, false).await
    }

    /// As [`Viewer::connect`], with a `control` data channel in its offer
    /// ([`Viewer::control`]).
    pub async fn connect_with_control(port: u16, camera: &str, session: &str) -> Self {
        Self::join_full(
            Endpoint::new(port, camera, session),
            true,
            "127.0.0.1",
            true,
        )
        .await
    }

    /// As [`Viewer::join`], offering its audio `sendrecv` with a `control` channel, so
    /// that it can talk through the camera ([`Viewer::talk_tone`]). Without `decode`,
    /// frames are only counted (a talker on a slow machine keeps its CPU for talking).
    #[allow(dead_code)] // not every test crate talks
    pub async fn join_talking(ep: Endpoint, decode: bool) -> Self {
        Self::join_opts(ep, decode, "127.0.0.1", true, true).await
    }

    async fn join_full(ep: Endpoint, decode: bool, ip: &str, control: bool) -> Self {
        Self::join_opts(ep, decode, ip, control, false).await
    }

    async fn join_opts(ep: Endpoint, decode: bool, ip: &str, control: bool, talk: bool) -> Self {
        let session = ep.session.clone();
        let video_decoded = Arc::new(AtomicU64::new(0));
        let audio_decoded = Arc::new(AtomicU64::new(0));
        let decoders = Decoders::new(video_decoded.clone(), audio_decoded.clone(), decode);
        let (video_sink, audio_sink) = (decoders.clone(), decoders.clone());
        let inner = ProbeSession::join(
            &ep,
            ProbeOptions {
                udp_addrs: vec![format!("{ip}:0")],
                on_video: Some(Box::new(move |au| video_sink.push_video(au))),
                on_audio: Some(Box::new(move |p| audio_sink.push_audio(p))),
                control,
                talk,
                ..ProbeOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("viewer {session}: {e}"));
        Self {
            session,
            inner,
            video_decoded,
            audio_decoded,
            _decoders: decoders,
        }
    }

    /// Sends an RTCP Picture Loss Indication (RFC 4585 §6.3.1) for the video track.
    pub async fn send_pli(&self) {
        self.inner.probe.send_pli().await.expect("write PLI");
    }

    /// A copy of what the viewer saw so far.
    pub fn report(&self) -> Report {
        let p = self.inner.probe.report();
        let s = self.inner.log();
        Report {
            video_frames: p.video_frames,
            first_frame_idr_with_sps_pps: p.first_frame_idr_with_sps_pps,
            first_packet_keyframe: p.first_packet_keyframe,
            decoded_video: self.video_decoded.load(Ordering::Relaxed),
            opus_packets: p.opus_packets,
            decoded_audio: self.audio_decoded.load(Ordering::Relaxed),
            first_frame_after_offer: p.first_frame_after_offer,
            ended: s.ended,
            state: p.state,
            answer: s.answer,
            video_timestamps: p.video_timestamps,
            keyframes: p.keyframes,
            remote_candidates: s.remote_candidates,
            rejected: s.rejected,
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

    /// Restarts ICE on the live session (an ICE restart offer on the same session id).
    pub async fn restart_ice(&self) {
        self.inner.restart_ice().await.expect("ICE restart offer");
    }

    /// Sends a request on the `control` data channel and returns its reply (with a
    /// snapshot's bytes), waiting at most 10 s.
    pub async fn control(&self, request: &str) -> ControlReply {
        self.inner
            .probe
            .control(request, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("control {request}: {e}"))
    }

    /// Talks: a sine tone of `hz` for `duration`, encoded up front by GStreamer
    /// (`audiotestsrc ! opusenc`, 20 ms frames), then sent on the talk track one packet
    /// every 20 ms (a late tick is caught up, keeping the sender's timeline). Returns
    /// how many Opus packets were sent.
    #[allow(dead_code)] // not every test crate talks
    pub async fn talk_tone(&self, hz: u32, duration: Duration) -> u64 {
        const FRAME: u32 = 960; // 20 ms at 48 kHz
        let frames = u32::try_from(duration.as_millis() / 20).unwrap_or(u32::MAX);
        let packets = tokio::task::spawn_blocking(move || opus_tone(hz, frames))
            .await
            .expect("tone encoder");
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0;
        for packet in packets {
            tick.tick().await;
            if self.inner.probe.talk(packet, FRAME).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// Sends `bye` and closes the peer connection.
    pub async fn bye(&self) {
        self.inner.bye().await;
    }
}
