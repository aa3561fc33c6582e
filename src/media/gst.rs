//! The one GStreamer adapter: builds the pipeline from a [`PipelineDesc`], moves encoded
//! buffers from the `video` / `audio` appsinks into the hubs, turns keyframe requests into
//! upstream force-key-unit events, and reports how a run ended (bus error, EOS, stall).

use super::hub::Hub;
use super::pipeline::{EncoderPlan, PipelineDesc, Probe};
use super::snapshot::{Gate, Snapshots};
use super::{Frame, Outputs, VideoFormat, h264};
use crate::telemetry::{RateLimit, suppressed};
use bytes::Bytes;
use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Errors of the GStreamer adapter.
#[derive(Debug, thiserror::Error)]
pub enum GstError {
    /// `gst_init` failed.
    #[error("GStreamer init failed: {0}")]
    Init(String),
    /// The description did not parse into a pipeline (missing plugin, bad caps).
    #[error("pipeline description rejected: {0}")]
    Parse(String),
    /// An appsink of the description is missing.
    #[error("pipeline has no appsink named {0:?}")]
    NoAppsink(&'static str),
    /// The pipeline refused to start.
    #[error("pipeline did not start: {0}")]
    Start(String),
}

/// Initialises GStreamer once per process.
///
/// # Errors
/// [`GstError::Init`].
pub fn init() -> Result<(), GstError> {
    gst::init().map_err(|e| GstError::Init(e.to_string()))
}

/// GStreamer library version, e.g. `1.22.0`.
pub fn version() -> String {
    let (a, b, c, _) = gst::version();
    format!("{a}.{b}.{c}")
}

/// Fills the element facts of a [`Probe`] (device facts come from `devices`).
/// `libcamerasrc` is probed through the registry: `gst-inspect --exists` lies about it.
pub fn probe_elements(probe: &mut Probe) {
    // libcamera cameras are media-controller devices: without a /dev/media* node there is
    // nothing for libcamerasrc to open, even when the plugin is installed.
    probe.libcamerasrc = gst::ElementFactory::find("libcamerasrc").is_some()
        && super::devices::any_dev_node(std::path::Path::new("/dev"), |n| n.starts_with("media"));
    probe.text_overlay = ["clockoverlay", "timeoverlay"]
        .iter()
        .all(|e| gst::ElementFactory::find(e).is_some());
    probe.vp8enc = gst::ElementFactory::find("vp8enc").is_some();
    probe.v4l2h264enc = gst::ElementFactory::find("v4l2h264enc").is_some()
        && std::path::Path::new("/dev/video11").exists();
    // The Pi's hardware decoder first, then FFmpeg's, then Cisco's (plugins-bad).
    probe.h264_decoder = [
        ("v4l2h264dec", Some("/dev/video10")),
        ("avdec_h264", None),
        ("openh264dec", None),
    ]
    .iter()
    .find(|(element, node)| {
        gst::ElementFactory::find(element).is_some()
            && node.is_none_or(|n| std::path::Path::new(n).exists())
    })
    .map(|(element, _)| (*element).to_owned());
}

/// How a capture run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureEnd {
    /// An element posted an error.
    Error(String),
    /// The source ended the stream.
    Eos,
    /// No video frame for the stall timeout.
    Stalled(Duration),
}

/// State shared with the appsink callbacks.
struct Shared {
    /// Added to every PTS so timestamps stay continuous across restarts.
    pts_offset: Duration,
    /// End of the newest frame (PTS + duration, offset applied).
    last_end: Mutex<Duration>,
    /// Milliseconds since `epoch` of the newest video frame.
    last_video_ms: AtomicU64,
    epoch: Instant,
    video_frames: AtomicU64,
    /// Woken (a stored permit) by the first video frame.
    first_video: tokio::sync::Notify,
}

/// A running pipeline. Stop it with [`Capture::stop`] (also done on drop).
pub struct Capture {
    pipeline: gst::Pipeline,
    shared: Arc<Shared>,
    video_hub: Hub,
    /// The VP8 and low H.264 rungs' hubs.
    extra_hubs: [Hub; 2],
    snapshots: Snapshots,
}

impl Capture {
    /// Builds and starts the pipeline; frames flow into the [`Outputs`]' hubs (an extra
    /// rung's only while its hub has subscribers) with `pts_offset` added, JPEGs of its
    /// snapshot branch (if it has one) into `snapshots`. `format` is updated from the
    /// first keyframe.
    ///
    /// # Errors
    /// [`GstError`] when the pipeline cannot be built or started.
    pub fn start(
        desc: &PipelineDesc,
        Outputs {
            video: video_hub,
            audio: audio_hub,
            vp8: vp8_hub,
            low: low_hub,
            snapshots,
        }: &Outputs,
        pts_offset: Duration,
        nominal_fps: u32,
        format: watch::Sender<Option<VideoFormat>>,
    ) -> Result<Self, GstError> {
        let pipeline = gst::parse::launch(&desc.launch)
            .map_err(|e| GstError::Parse(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| GstError::Parse("top-level element is not a pipeline".into()))?;
        let shared = Arc::new(Shared {
            pts_offset,
            last_end: Mutex::new(pts_offset),
            last_video_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            video_frames: AtomicU64::new(0),
            first_video: tokio::sync::Notify::new(),
        });
        let video_sink = appsink(&pipeline, "video")?;
        {
            let requester_sink = video_sink.clone();
            video_hub.set_keyframe_requester(Some(Arc::new(move || {
                if !force_key_unit(&requester_sink) {
                    log::debug!("force-key-unit event not handled upstream");
                }
            })));
        }
        install(
            &video_sink,
            video_hub.clone(),
            shared.clone(),
            Some((format, nominal_fps, Rebase::watch(&pipeline, "encoder"))),
        );
        if let Some(audio_sink) = pipeline
            .by_name("audio")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        {
            install(&audio_sink, audio_hub.clone(), shared.clone(), None);
        }
        install_stamp(&pipeline);
        install_snapshots(&pipeline, &video_sink, desc.encoder, snapshots);
        for (rung, hub) in [(&VP8_RUNG, vp8_hub), (&LOW_RUNG, low_hub)] {
            install_extra_rung(&pipeline, rung, (&video_sink, desc.encoder), hub, &shared);
        }
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            snapshots.set_branch(None);
            for hub in [vp8_hub, low_hub] {
                hub.set_demand_hook(None);
                hub.set_keyframe_requester(None);
            }
            let _ = pipeline.set_state(gst::State::Null);
            return Err(GstError::Start(format!(
                "{e}: {}",
                first_bus_error(&pipeline)
            )));
        }
        Ok(Self {
            pipeline,
            shared,
            video_hub: video_hub.clone(),
            extra_hubs: [vp8_hub.clone(), low_hub.clone()],
            snapshots: snapshots.clone(),
        })
    }

    /// Waits until the run ends: a bus error, EOS, or no video frame for `stall_after`
    /// (for the first frame: `first_within`, counted from start).
    pub async fn wait(&self, stall_after: Duration, first_within: Duration) -> CaptureEnd {
        let Some(bus) = self.pipeline.bus() else {
            return CaptureEnd::Error("pipeline has no bus".into());
        };
        let mut messages = bus.stream();
        let started = self.shared.epoch;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut warnings = RateLimit::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return CaptureEnd::Error("bus closed".into());
                    };
                    match msg.view() {
                        gst::MessageView::Eos(_) => return CaptureEnd::Eos,
                        gst::MessageView::Error(err) => {
                            let src = err.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                            return CaptureEnd::Error(format!(
                                "{src}: {} ({})",
                                err.error(),
                                err.debug().map(|d| d.to_string()).unwrap_or_default()
                            ));
                        }
                        gst::MessageView::Warning(w) => {
                            // Some elements warn once per buffer (e.g. lateness).
                            if let Some(held_back) = warnings.check(Instant::now()) {
                                log::warn!("GStreamer warning: {}{}", w.error(), suppressed(held_back));
                            }
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    let last_ms = self.shared.last_video_ms.load(Ordering::Relaxed);
                    let since = started.elapsed().saturating_sub(Duration::from_millis(last_ms));
                    let limit = if self.video_frames() == 0 { first_within } else { stall_after };
                    if since >= limit {
                        return CaptureEnd::Stalled(since);
                    }
                }
            }
        }
    }

    /// Resolves once this run has delivered its first video frame.
    pub async fn first_video_frame(&self) {
        if self.video_frames() == 0 {
            // `notify_one` stores a permit, so a frame that arrived between the check
            // and this await is not missed.
            self.shared.first_video.notified().await;
        }
    }

    /// Video frames delivered so far by this run.
    pub fn video_frames(&self) -> u64 {
        self.shared.video_frames.load(Ordering::Relaxed)
    }

    /// End of the newest frame, for the next run's `pts_offset`.
    pub fn end_pts(&self) -> Duration {
        *self
            .shared
            .last_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the pipeline (state NULL releases `/dev/video*` and the sound card).
    pub fn stop(&self) {
        self.video_hub.set_keyframe_requester(None);
        for hub in &self.extra_hubs {
            hub.set_keyframe_requester(None);
            hub.set_demand_hook(None);
        }
        self.snapshots.set_branch(None);
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects the pipeline's snapshot branch (`snapshot_valve` → … → `snapshot` appsink)
/// to `snapshots`, or tells it there is none.
fn install_snapshots(
    pipeline: &gst::Pipeline,
    video_sink: &gst_app::AppSink,
    encoder: EncoderPlan,
    snapshots: &Snapshots,
) {
    let (Some(valve), Ok(sink)) = (
        pipeline.by_name("snapshot_valve"),
        appsink(pipeline, "snapshot"),
    ) else {
        snapshots.set_branch(Some(None));
        return;
    };
    let publish_to = snapshots.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(map) = sample
                    .buffer_owned()
                    .and_then(|b| b.into_mapped_buffer_readable().ok())
                {
                    publish_to.publish(Bytes::from_owner(map));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let upstream = video_sink.clone();
    let gate: Gate = Arc::new(move |open| {
        valve.set_property("drop", !open);
        // The camera's own H.264 decodes from an IDR on: ask for one now rather than
        // wait out its GOP.
        if open && encoder == EncoderPlan::Passthrough {
            force_key_unit(&upstream);
        }
    });
    snapshots.set_branch(Some(Some(gate)));
}

/// Maps an encoder's output timestamps back to its input's.
///
/// `GstVideoEncoder` subclasses such as `x264enc` ask for a minimum PTS (1000 hours, so
/// that a first DTS before the first PTS stays positive) and shift every output by
/// `min_pts − PTS of the first frame they encoded`. An encoder that starts with the
/// pipeline is shifted by about 1000 h; one behind a valve that opens later (an extra
/// rung) by 1000 h minus the time it was closed. Rungs a viewer switches between must
/// share one timeline, and the capture time is PTS against the running time, so each
/// encoder's shift is measured (its first input PTS, from a probe, against its first
/// output PTS) and taken off again.
#[derive(Default)]
struct Rebase {
    /// PTS of the first buffer into the encoder, ns; `u64::MAX` until one came.
    first_in: AtomicU64,
    /// Output − input, ns, from the first output; `None` before it.
    shift: Mutex<Option<i128>>,
}

impl Rebase {
    /// Watches the sink pad of `encoder` (by name) in `pipeline`; `None` without one
    /// (a passed-through camera's H.264 is never re-timed).
    fn watch(pipeline: &gst::Pipeline, encoder: &str) -> Option<Arc<Self>> {
        let pad = pipeline.by_name(encoder)?.static_pad("sink")?;
        let rebase = Arc::new(Self {
            first_in: AtomicU64::new(u64::MAX),
            shift: Mutex::new(None),
        });
        let seen = rebase.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                // The first only: the shift is fixed at the encoder's first frame.
                let _ = seen.first_in.compare_exchange(
                    u64::MAX,
                    pts.nseconds(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                return gst::PadProbeReturn::Remove;
            }
            gst::PadProbeReturn::Ok
        });
        Some(rebase)
    }

    /// The input-timeline PTS of an output buffer stamped `out`.
    fn map(&self, out: Duration) -> Duration {
        let mut shift = self.shift.lock().unwrap_or_else(|p| p.into_inner());
        let shift = *shift.get_or_insert_with(|| match self.first_in.load(Ordering::Relaxed) {
            u64::MAX => 0,
            first => out.as_nanos() as i128 - i128::from(first),
        });
        let ns = (out.as_nanos() as i128 - shift).max(0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// Paints each frame's wall-clock capture time (`media::stamp`) on the buffers leaving
/// the `capture_stamp` element, when the description has one (`[video]
/// stamp_capture_time`, test pattern only). The capture time is the wall clock now
/// minus how long ago, by the pipeline clock, the buffer's PTS was.
fn install_stamp(pipeline: &gst::Pipeline) {
    let Some(element) = pipeline.by_name("capture_stamp") else {
        return;
    };
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    let clocked = element.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(video) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let age = match (clocked.clock(), clocked.base_time(), buffer.pts()) {
            (Some(clock), Some(base), Some(pts)) => clock
                .time()
                .checked_sub(base)
                .and_then(|running| running.checked_sub(pts))
                .map_or(Duration::ZERO, |d| Duration::from_nanos(d.nseconds())),
            _ => Duration::ZERO,
        };
        let wall = std::time::SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        // Milliseconds modulo 2^32: the cast keeps exactly those bits.
        let ms = (wall.as_millis() % (1u128 << 32)) as u32;
        let writable = buffer.make_mut();
        if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(writable, &video)
        {
            let (w, h) = (video.width() as usize, video.height() as usize);
            let stride =
                usize::try_from(gst_video::VideoFrameExt::plane_stride(&frame)[0]).unwrap_or(0);
            if let Ok(y) = frame.plane_data_mut(0) {
                super::stamp::paint(y, stride, (w, h), ms);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// An extra rung's elements in the pipeline description (`media::pipeline`).
struct ExtraRung {
    valve: &'static str,
    sink: &'static str,
    /// Its encoder, whose timestamps are re-based ([`Rebase`]).
    encoder: &'static str,
    /// For the log: "VP8 rung", "low H.264 rung".
    label: &'static str,
    /// Who it is for, for the log.
    viewer: &'static str,
    /// Its frames are H.264 (keyframes are self-contained IDRs), else VP8 (keyframes
    /// by the buffer flags).
    h264: bool,
}

const VP8_RUNG: ExtraRung = ExtraRung {
    valve: "vp8_valve",
    sink: "vp8",
    encoder: "vp8_encoder",
    label: "VP8 rung",
    viewer: "a viewer without H.264 watches",
    h264: false,
};

const LOW_RUNG: ExtraRung = ExtraRung {
    valve: "low_valve",
    sink: "low",
    encoder: "low_encoder",
    label: "low H.264 rung",
    viewer: "a viewer's link needs it",
    h264: true,
};

/// Connects an extra rung of the pipeline (its valve → … → its appsink) to `hub`: the
/// valve opens while the hub has subscribers, and the hub's keyframe requests become
/// force-key-unit events to the rung's encoder. Without the rung the hub stays unfed.
fn install_extra_rung(
    pipeline: &gst::Pipeline,
    rung: &'static ExtraRung,
    (video_sink, encoder): (&gst_app::AppSink, EncoderPlan),
    hub: &Hub,
    shared: &Arc<Shared>,
) {
    let (Some(valve), Ok(sink)) = (pipeline.by_name(rung.valve), appsink(pipeline, rung.sink))
    else {
        return;
    };
    let requester_sink = sink.clone();
    hub.set_keyframe_requester(Some(Arc::new(move || {
        if !force_key_unit(&requester_sink) {
            log::debug!("{} force-key-unit event not handled upstream", rung.label);
        }
    })));
    let rebase = Rebase::watch(pipeline, rung.encoder);
    install_rung(&sink, hub.clone(), shared.clone(), (rung.h264, rebase));
    let upstream = video_sink.clone();
    hub.set_demand_hook(Some(Arc::new(move |open| {
        if open {
            log::info!("{} started: {}", rung.label, rung.viewer);
        } else {
            log::info!("{} stopped: no viewer needs it", rung.label);
        }
        valve.set_property("drop", !open);
        // A passed-through camera's H.264 decodes from an IDR on.
        if open && encoder == EncoderPlan::Passthrough {
            force_key_unit(&upstream);
        }
    })));
}

/// Asks upstream of `sink` for a keyframe with SPS/PPS (an upstream force-key-unit
/// event, `all-headers`); returns whether an element handled it.
fn force_key_unit(sink: &gst_app::AppSink) -> bool {
    sink.send_event(
        gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build(),
    )
}

/// Feeds an extra rung's appsink into its hub: keyframes from the buffer flags (and,
/// for `h264`, only self-contained IDRs), PTS with the run's offset, the capture time
/// as for the main rung. The capture health (stall detection, frame counts) stays with
/// the main rung alone.
fn install_rung(
    sink: &gst_app::AppSink,
    hub: Hub,
    shared: Arc<Shared>,
    (h264, rebase): (bool, Option<Arc<Rebase>>),
) {
    let mut last_pts: Option<Duration> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(Unpacked {
                    data,
                    pts,
                    duration,
                    delta,
                    captured_at,
                }) = unpack(sink, &sample, rebase.as_deref(), &mut last_pts)
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let keyframe = !delta && (!h264 || h264::is_self_contained_idr(&data));
                hub.publish(Frame {
                    data,
                    pts: pts + shared.pts_offset,
                    duration,
                    keyframe,
                    captured_at,
                    payloads: Default::default(),
                });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// One encoded buffer as a hub frame needs it, before the offset of the run.
struct Unpacked {
    data: Bytes,
    /// On the capture timeline (re-based when the encoder shifted it).
    pts: Duration,
    duration: Duration,
    delta: bool,
    captured_at: Instant,
}

/// Reads a sample of `sink`: its bytes, PTS (re-based by `rebase`), duration (from
/// the buffer, else the PTS delta to `last_pts`, which it updates), delta flag and
/// capture time. `None` for a sample without a buffer, a PTS (RTP timestamps come from
/// PTS only) or readable memory.
fn unpack(
    sink: &gst_app::AppSink,
    sample: &gst::Sample,
    rebase: Option<&Rebase>,
    last_pts: &mut Option<Duration>,
) -> Option<Unpacked> {
    let buffer = sample.buffer_owned()?;
    let Some(pts) = buffer.pts() else {
        log::debug!("dropping buffer without PTS");
        return None;
    };
    let pts = Duration::from_nanos(pts.nseconds());
    let pts = rebase.map_or(pts, |r| r.map(pts));
    let captured_at = Instant::now()
        .checked_sub(capture_age(sink, pts))
        .unwrap_or_else(Instant::now);
    let duration = buffer
        .duration()
        .map(|d| Duration::from_nanos(d.nseconds()))
        .or_else(|| last_pts.map(|prev| pts.saturating_sub(prev)))
        .unwrap_or_default();
    *last_pts = Some(pts);
    let delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
    let map = buffer.into_mapped_buffer_readable().ok()?;
    Some(Unpacked {
        data: Bytes::from_owner(map),
        pts,
        duration,
        delta,
        captured_at,
    })
}

/// How long ago the buffer with `pts` was captured: the pipeline's running time now
/// minus its PTS (zero without a clock).
fn capture_age(sink: &gst_app::AppSink, pts: Duration) -> Duration {
    match (sink.clock(), sink.base_time()) {
        (Some(clock), Some(base)) => clock
            .time()
            .checked_sub(base)
            .map(|running| Duration::from_nanos(running.nseconds()).saturating_sub(pts))
            .unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn appsink(pipeline: &gst::Pipeline, name: &'static str) -> Result<gst_app::AppSink, GstError> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or(GstError::NoAppsink(name))
}

fn first_bus_error(pipeline: &gst::Pipeline) -> String {
    pipeline
        .bus()
        .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
        .and_then(|msg| match msg.view() {
            gst::MessageView::Error(err) => Some(err.error().to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "no error message".into())
}

/// What the main video appsink adds to the plain feed: where the learnt format goes,
/// the nominal rate (Hz), and the encoder's timestamp re-basing (none for passthrough).
type MainVideo = (watch::Sender<Option<VideoFormat>>, u32, Option<Arc<Rebase>>);

fn install(sink: &gst_app::AppSink, hub: Hub, shared: Arc<Shared>, video: Option<MainVideo>) {
    let is_video = video.is_some();
    let rebase = video.as_ref().and_then(|v| v.2.clone());
    let mut format_known = false;
    let mut last_pts: Option<Duration> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(Unpacked {
                    data,
                    pts,
                    duration,
                    delta,
                    captured_at,
                }) = unpack(sink, &sample, rebase.as_deref(), &mut last_pts)
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let keyframe = if is_video {
                    !delta && h264::is_self_contained_idr(&data)
                } else {
                    true
                };
                if let Some((format, fps, _)) = video.as_ref()
                    && keyframe
                    && !format_known
                    && let Some(profile_level_id) = h264::profile_level_id(&data)
                {
                    let (width, height) = sample
                        .caps()
                        .and_then(|c| c.structure(0))
                        .map(|s| {
                            (
                                s.get::<i32>("width").unwrap_or(0).max(0) as u32,
                                s.get::<i32>("height").unwrap_or(0).max(0) as u32,
                            )
                        })
                        .unwrap_or((0, 0));
                    format_known = true;
                    // Per run: a restart or a switch to the fallback may change it.
                    let now = Some(VideoFormat {
                        profile_level_id,
                        width,
                        height,
                        fps: *fps,
                    });
                    if *format.borrow() != now {
                        log::info!(
                            "encoder emits H.264 profile-level-id {}, {width}x{height}",
                            now.as_ref().map_or("", |f| f.profile_level_id.as_str())
                        );
                        format.send_replace(now);
                    }
                }
                let pts = pts + shared.pts_offset;
                {
                    let mut end = shared.last_end.lock().unwrap_or_else(|p| p.into_inner());
                    *end = (*end).max(pts + duration);
                }
                let first_video =
                    is_video && shared.video_frames.fetch_add(1, Ordering::Relaxed) == 0;
                if is_video {
                    let ms = u64::try_from(shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                    shared.last_video_ms.store(ms, Ordering::Relaxed);
                }
                hub.publish(Frame {
                    data,
                    pts,
                    duration,
                    keyframe,
                    captured_at,
                    payloads: Default::default(),
                });
                // After the publish: whoever wakes on it (the supervisor marking capture
                // running, then the health check) finds the frame counted in the hub.
                if first_video {
                    shared.first_video.notify_one();
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}
