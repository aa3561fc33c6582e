//! Capture supervision: runs the pipeline, and on a bus error, EOS or stall restarts it
//! when `media::restart` says (capped exponential backoff with jitter). Viewers stay
//! subscribed to the hubs throughout and resume at the next IDR; PTS stays continuous
//! across restarts.
//!
//! Hot-plug: when a V4L2 camera's run fails and its device node is gone (unplugged,
//! driver unbound), the supervisor streams the [`Fallback`] test pattern at the
//! camera's size and rate instead of backing off, so viewers stay connected and the
//! watchdog stays fed; it watches for the node and switches back when it returns. A
//! camera that comes back unable to run the negotiated mode fails like any capture and,
//! past `video.restart_limit`, hands over to systemd, whose restart plans afresh.

use super::gst::{Capture, CaptureEnd};
use super::hub::Hub;
use super::pipeline::{EncoderPlan, PipelineDesc};
use super::restart::{Restart, RestartConfig, RestartPolicy};
use super::{Outputs, VideoFormat};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Failures of a streak each logged; later ones at most once per [`FAILURE_LOG_WINDOW`].
const LOG_EVERY_FAILURE_UP_TO: u32 = 10;
const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(30);
/// How often a lost camera's device node is looked for.
const DEVICE_POLL: Duration = Duration::from_millis(500);
/// How long a re-encoding run may wait for its first frame: its decoder needs the
/// camera's next IDR, and the camera was re-encoded for sending them rarely.
const REENCODE_FIRST_FRAME: Duration = Duration::from_secs(30);
/// How long a returned device node must stay before capture reopens it: udev applies
/// the node's group and mode just after it appears.
const DEVICE_SETTLE: Duration = Duration::from_secs(1);

/// Capture state for status reporting and the watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureState {
    /// Starting the first time.
    Starting,
    /// Frames are flowing.
    Running,
    /// Waiting to restart after a failure.
    Restarting {
        /// Consecutive failures so far.
        failures: u32,
        /// The failure.
        reason: String,
    },
    /// The camera's device node is gone; the test pattern streams in its place until
    /// the node returns.
    DeviceLost {
        /// The device node, e.g. `/dev/video0`.
        device: String,
        /// How the camera's last run ended.
        reason: String,
    },
    /// Stopped for shutdown.
    Stopped,
}

/// What to stream while the camera is unplugged.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// The camera's device node; its absence after a failed run means unplugged.
    pub device: PathBuf,
    /// The test pattern at the camera's size and rate, with the same audio.
    pub desc: PipelineDesc,
}

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// No video frame for this long counts as a stall.
    pub stall_timeout: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Retry delay cap.
    pub max_backoff: Duration,
    /// A run this long resets the backoff.
    pub healthy_after: Duration,
    /// Nominal frame rate (reported in the video format).
    pub fps: u32,
    /// How long a keyframe request may go unanswered by a passed-through camera
    /// before its H.264 is re-encoded (`pipeline::passthrough_patience`).
    pub passthrough_patience: Duration,
}

/// What the supervisor reports while it runs.
#[derive(Debug)]
pub struct SupervisorOutputs {
    /// What the encoder emits, learnt per run from its first keyframe.
    pub format: watch::Sender<Option<VideoFormat>>,
    /// The capture state, for health and status.
    pub state: watch::Sender<CaptureState>,
    /// The pipeline running now in words (`PipelineDesc`'s `Display`): changes when
    /// the fallback or the re-encode plan takes over.
    pub source: watch::Sender<String>,
    /// Capture runs that ended in failure (errors and stalls) since start.
    pub failures: Arc<AtomicU64>,
}

/// How one run ended.
enum RunEnd {
    Failed {
        reason: String,
        end_pts: Option<Duration>,
    },
    DeviceBack {
        end_pts: Duration,
    },
    KeyframesIgnored {
        end_pts: Duration,
        waited: Duration,
    },
    Shutdown,
}

/// Runs capture until `shutdown` is cancelled, restarting it as [`RestartPolicy`]
/// decides and streaming `fallback` while the camera is unplugged.
pub async fn run(
    mut desc: PipelineDesc,
    fallback: Option<Fallback>,
    cfg: SupervisorConfig,
    media: Outputs,
    outputs: SupervisorOutputs,
    shutdown: CancellationToken,
) {
    let SupervisorOutputs {
        format,
        state,
        source,
        failures: failure_count,
    } = outputs;
    let mut policy = RestartPolicy::new(RestartConfig {
        min_backoff: cfg.min_backoff,
        max_backoff: cfg.max_backoff,
        healthy_after: cfg.healthy_after,
        jitter: true,
    });
    // Some(reason) while the fallback streams.
    let mut lost: Option<String> = None;
    let mut failure_log = crate::telemetry::RateLimit::new(FAILURE_LOG_WINDOW);
    while !shutdown.is_cancelled() {
        let (current, fallback_device) = match (&lost, &fallback) {
            (Some(_), Some(fb)) => (&fb.desc, Some(fb.device.as_path())),
            _ => (&desc, None),
        };
        let running = match (&lost, &fallback) {
            (Some(reason), Some(fb)) => CaptureState::DeviceLost {
                device: fb.device.display().to_string(),
                reason: reason.clone(),
            },
            _ => CaptureState::Running,
        };
        let text = current.to_string();
        source.send_if_modified(|s| {
            let changed = *s != text;
            if changed {
                s.clone_from(&text);
            }
            changed
        });
        let started = Instant::now();
        let end = run_once(
            current,
            &cfg,
            &policy,
            &media,
            &format,
            (&state, running),
            fallback_device,
            &shutdown,
        )
        .await;
        // A run's pipeline, buffers and streaming threads are gone now: hand their
        // heap back rather than let each restart leave its high-water mark behind.
        crate::memory::trim();
        match end {
            RunEnd::Shutdown => break,
            RunEnd::KeyframesIgnored { end_pts, waited } => {
                policy.switched(Some(end_pts));
                if let Some(reencode) = desc.reencode.take() {
                    log::warn!(
                        "the camera ignores keyframe requests (none for {} ms after asking): \
                         re-encoding its H.264 from now on; capture: {reencode}",
                        waited.as_millis()
                    );
                    desc = *reencode;
                }
                // Until the decoder has the camera's next IDR no frame comes; the
                // watchdog must not count that wait as a stall.
                state.send_replace(CaptureState::Starting);
                continue;
            }
            RunEnd::DeviceBack { end_pts } => {
                policy.switched(Some(end_pts));
                lost = None;
                if let Some(fb) = &fallback {
                    log::info!(
                        "camera {} is back: capturing from it again",
                        fb.device.display()
                    );
                }
                continue;
            }
            RunEnd::Failed { reason, end_pts } => {
                if let Some(fb) = &fallback {
                    let present = fb.device.exists();
                    if lost.is_none() && !present {
                        log::warn!(
                            "camera {} is gone ({reason}): streaming the test pattern until it returns",
                            fb.device.display()
                        );
                        policy.switched(end_pts);
                        state.send_replace(CaptureState::DeviceLost {
                            device: fb.device.display().to_string(),
                            reason: reason.clone(),
                        });
                        lost = Some(reason);
                        continue;
                    }
                    if lost.is_some() && present {
                        // The fallback failed, and the camera is back meanwhile.
                        lost = None;
                    }
                }
                let now = Instant::now();
                failure_count.fetch_add(1, Ordering::Relaxed);
                let Restart { failures, delay } = policy.failed(started, now, end_pts);
                // Retries are frequent: past the first ones of a streak (those that lead
                // to the hand-over to systemd) one line per window is enough.
                let logged = if failures <= LOG_EVERY_FAILURE_UP_TO {
                    Some(0)
                } else {
                    failure_log.check(now)
                };
                if let Some(held_back) = logged {
                    log::error!(
                        "capture failed ({reason}); restart {failures} in {} ms{}",
                        delay.as_millis(),
                        crate::telemetry::suppressed(held_back)
                    );
                }
                state.send_replace(CaptureState::Restarting { failures, reason });
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    state.send_replace(CaptureState::Stopped);
    for hub in [&media.video, &media.audio, &media.vp8, &media.low] {
        hub.close();
    }
}

/// One run of `desc`, until it fails, the watched device returns, or shutdown.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    desc: &PipelineDesc,
    cfg: &SupervisorConfig,
    policy: &RestartPolicy,
    media: &Outputs,
    format: &watch::Sender<Option<VideoFormat>>,
    (state, running): (&watch::Sender<CaptureState>, CaptureState),
    watch_device: Option<&Path>,
    shutdown: &CancellationToken,
) -> RunEnd {
    let capture = match Capture::start(desc, media, policy.pts_offset(), cfg.fps, format.clone()) {
        Ok(capture) => capture,
        Err(e) => {
            return RunEnd::Failed {
                reason: e.to_string(),
                end_pts: None,
            };
        }
    };
    let first_within = if desc.reencodes_camera_h264() {
        cfg.stall_timeout.max(REENCODE_FIRST_FRAME)
    } else {
        cfg.stall_timeout
    };
    // Its first frames may reference pictures of the previous run (a passthrough camera
    // resumes mid-GOP): viewers wait for this run's first keyframe.
    for hub in [&media.video, &media.vp8, &media.low] {
        hub.new_run();
    }
    let end = tokio::select! {
        end = capture.wait(cfg.stall_timeout, first_within) => Some(end),
        () = mark_running(&capture, state, running) => None,
        () = device_returns(watch_device) => {
            capture.stop();
            return RunEnd::DeviceBack { end_pts: capture.end_pts() };
        }
        waited = keyframes_ignored(desc, &media.video, cfg.passthrough_patience) => {
            capture.stop();
            return RunEnd::KeyframesIgnored { end_pts: capture.end_pts(), waited };
        }
        () = shutdown.cancelled() => None,
    };
    capture.stop();
    let reason = match end {
        None => return RunEnd::Shutdown,
        Some(CaptureEnd::Eos) => "end of stream".to_owned(),
        Some(CaptureEnd::Error(e)) => e,
        Some(CaptureEnd::Stalled(d)) => format!("no video frame for {} ms", d.as_millis()),
    };
    RunEnd::Failed {
        reason,
        end_pts: Some(capture.end_pts()),
    }
}

/// Resolves once `device` exists and is still there [`DEVICE_SETTLE`] later; never
/// resolves for `None`.
async fn device_returns(device: Option<&Path>) {
    let Some(device) = device else {
        return std::future::pending().await;
    };
    let mut poll = tokio::time::interval(DEVICE_POLL);
    let mut seen: Option<Instant> = None;
    loop {
        poll.tick().await;
        match (device.exists(), seen) {
            (false, _) => seen = None,
            (true, None) => seen = Some(Instant::now()),
            (true, Some(at)) if at.elapsed() >= DEVICE_SETTLE => return,
            (true, Some(_)) => {}
        }
    }
}

/// For a passed-through camera that has a re-encode plan: resolves with the wait once
/// a keyframe request has gone unanswered for `patience`. Never resolves otherwise.
async fn keyframes_ignored(desc: &PipelineDesc, video_hub: &Hub, patience: Duration) -> Duration {
    if desc.encoder != EncoderPlan::Passthrough || desc.reencode.is_none() {
        return std::future::pending().await;
    }
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        poll.tick().await;
        if let Some(waited) = video_hub.keyframe_wait().filter(|w| *w >= patience) {
            return waited;
        }
    }
}

/// Publishes `running` once the capture has delivered its first video frame (woken by
/// the appsink callback, not polled); never resolves.
async fn mark_running(
    capture: &Capture,
    state: &watch::Sender<CaptureState>,
    running: CaptureState,
) {
    capture.first_video_frame().await;
    state.send_replace(running);
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Frame;
    use crate::media::pipeline::{AudioPlan, EncoderPlan, VideoPlan};
    use std::sync::Arc;

    /// A real GStreamer H.264 pipeline at `width`x120; `frames` ends it with EOS.
    fn desc(width: u32, frames: Option<u32>) -> PipelineDesc {
        let limit = frames.map_or(String::new(), |n| format!(" num-buffers={n}"));
        PipelineDesc {
            video: VideoPlan::Test,
            encoder: EncoderPlan::X264,
            audio: AudioPlan::None,
            mode: None,
            launch: format!(
                "videotestsrc is-live=true{limit} ! video/x-raw,width={width},height=120,framerate=30/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=300 \
                 ! video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 \
                 ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=video sync=false"
            ),
            fallback: None,
            reencode: None,
            vp8: None,
            low: None,
        }
    }

    fn outputs(video: &Hub, audio: Hub) -> Outputs {
        Outputs {
            video: video.clone(),
            audio,
            vp8: Hub::new("vp8", 64, true, Duration::from_millis(200)),
            low: Hub::new("low", 64, true, Duration::from_millis(200)),
            snapshots: crate::media::snapshot::Snapshots::default(),
        }
    }

    async fn until<T>(what: &str, rx: &mut watch::Receiver<T>, f: impl Fn(&T) -> bool) {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| f(v)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("supervisor alive");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unplugged_camera_is_replaced_by_the_fallback_until_it_returns() {
        crate::media::gst::init().expect("gstreamer");
        let dir = tempfile::tempdir().expect("tempdir");
        let device = dir.path().join("video0");
        // The "camera" ends after 15 frames with its node already gone: unplugged.
        let video = Hub::new("video", 64, true, Duration::from_millis(200));
        let audio = Hub::new("audio", 8, false, Duration::from_millis(200));
        let viewer = video.subscribe();
        let (format_tx, mut format) = watch::channel(None);
        let (state_tx, mut state) = watch::channel(CaptureState::Starting);
        let (source_tx, _source) = watch::channel(String::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            desc(160, Some(15)),
            Some(Fallback {
                device: device.clone(),
                desc: desc(320, None),
            }),
            SupervisorConfig {
                stall_timeout: Duration::from_secs(5),
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                healthy_after: Duration::from_secs(30),
                fps: 30,
                passthrough_patience: Duration::from_secs(4),
            },
            outputs(&video, audio),
            SupervisorOutputs {
                format: format_tx,
                state: state_tx,
                source: source_tx,
                failures: Arc::default(),
            },
            stop.clone(),
        ));
        until("the camera's frames", &mut format, |f| {
            f.as_ref().is_some_and(|f| f.width == 160)
        })
        .await;
        until(
            "the fallback",
            &mut state,
            |s| matches!(s, CaptureState::DeviceLost { reason, .. } if reason == "end of stream"),
        )
        .await;
        until("the test pattern's frames", &mut format, |f| {
            f.as_ref().is_some_and(|f| f.width == 320)
        })
        .await;
        let during = video.stats().published;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(video.stats().published > during + 5, "the fallback streams");
        // Drain, then plug the camera back in.
        while viewer.try_recv().is_some() {}
        std::fs::write(&device, b"").expect("plug in");
        until("the camera again", &mut format, |f| {
            f.as_ref().is_some_and(|f| f.width == 160)
        })
        .await;
        until("running", &mut state, |s| *s == CaptureState::Running).await;
        // What the viewer got since: the fallback's last frames, then the camera from
        // an IDR on, with PTS still increasing.
        let got: Vec<Frame> = std::iter::from_fn(|| viewer.try_recv()).collect();
        let first_camera = got.iter().rposition(|f| f.keyframe).expect("a keyframe");
        assert!(got.windows(2).all(|w| w[1].pts > w[0].pts), "PTS goes on");
        assert!(first_camera < got.len());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("supervisor stops")
            .expect("no panic");
        assert_eq!(*state.borrow(), CaptureState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_camera_ignoring_keyframe_requests_is_re_encoded() {
        crate::media::gst::init().expect("gstreamer");
        if gstreamer::ElementFactory::find("openh264dec").is_none() {
            panic!("openh264dec (gstreamer1.0-plugins-bad) is needed");
        }
        // The camera: a 10 s GOP. The re-encode plan decodes it and encodes again.
        let camera = desc(160, None).launch;
        let reencode = PipelineDesc {
            encoder: EncoderPlan::X264,
            launch: camera.replacen(
                "! h264parse config-interval=-1",
                "! h264parse ! openh264dec ! videoconvert ! x264enc tune=zerolatency \
                 speed-preset=ultrafast key-int-max=300 ! h264parse config-interval=-1",
                1,
            ),
            ..desc(160, None)
        };
        let passthrough = PipelineDesc {
            encoder: EncoderPlan::Passthrough,
            launch: camera,
            reencode: Some(Box::new(reencode)),
            ..desc(160, None)
        };
        let video = Hub::new("video", 64, true, Duration::from_millis(200));
        let audio = Hub::new("audio", 8, false, Duration::from_millis(200));
        let (format_tx, _format) = watch::channel(None);
        let (state_tx, mut state) = watch::channel(CaptureState::Starting);
        let (source_tx, source) = watch::channel(String::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            passthrough,
            None,
            SupervisorConfig {
                stall_timeout: Duration::from_secs(5),
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                healthy_after: Duration::from_secs(30),
                fps: 30,
                passthrough_patience: Duration::from_millis(1500),
            },
            outputs(&video, audio),
            SupervisorOutputs {
                format: format_tx,
                state: state_tx,
                source: source_tx,
                failures: Arc::default(),
            },
            stop.clone(),
        ));
        until("running", &mut state, |s| *s == CaptureState::Running).await;
        // Well past the camera's first IDR, a viewer joins and asks for a keyframe: the
        // camera's next one is 10 s away, so edgecam re-encodes after 1.5 s.
        let limit = Instant::now() + Duration::from_secs(5);
        while video.stats().published < 15 && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A camera's encoder is out of GStreamer's reach: force-key-unit events stop
        // at v4l2src. Here they stop at the hub, for this run only.
        video.set_keyframe_requester(Some(Arc::new(|| {})));
        let viewer = video.subscribe();
        viewer.request_keyframe();
        let asked = Instant::now();
        let first = next_keyframe(&viewer, Duration::from_secs(8)).await;
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "answered in {waited:?}: the camera was not ignoring requests"
        );
        assert!(first.keyframe);
        assert_eq!(
            *source.borrow(),
            "video test pattern, encoder X264, audio none",
            "the status follows the switch"
        );
        // Re-encoding now: a request is answered within a few frames.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while viewer.try_recv().is_some() {}
        viewer.resync();
        let asked = Instant::now();
        next_keyframe(&viewer, Duration::from_secs(3)).await;
        let answered = asked.elapsed();
        assert!(
            answered < Duration::from_secs(1),
            "answered in {answered:?}"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("supervisor stops")
            .expect("no panic");
    }

    async fn next_keyframe(viewer: &crate::media::hub::Subscription, limit: Duration) -> Frame {
        tokio::time::timeout(limit, async {
            loop {
                match viewer.recv().await {
                    Some(f) if f.keyframe => return f,
                    Some(_) => {}
                    None => panic!("hub closed"),
                }
            }
        })
        .await
        .expect("a keyframe in time")
    }
}
