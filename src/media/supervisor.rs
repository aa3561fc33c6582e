//! Capture supervision: runs the pipeline, and on a bus error, EOS or stall restarts it
//! when `media::restart` says (capped exponential backoff with jitter). Viewers stay subscribed to the hubs
//! throughout and resume at the next IDR; PTS stays continuous across restarts.

use super::VideoFormat;
use super::gst::{Capture, CaptureEnd};
use super::hub::Hub;
use super::pipeline::PipelineDesc;
use super::restart::{Restart, RestartConfig, RestartPolicy};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
    /// Stopped for shutdown.
    Stopped,
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
}

/// Runs capture until `shutdown` is cancelled, restarting it as [`RestartPolicy`]
/// decides.
pub async fn run(
    desc: PipelineDesc,
    cfg: SupervisorConfig,
    video_hub: Hub,
    audio_hub: Hub,
    format: watch::Sender<Option<VideoFormat>>,
    state: watch::Sender<CaptureState>,
    shutdown: CancellationToken,
) {
    let mut policy = RestartPolicy::new(RestartConfig {
        min_backoff: cfg.min_backoff,
        max_backoff: cfg.max_backoff,
        healthy_after: cfg.healthy_after,
        jitter: true,
    });
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let (reason, end_pts) = match Capture::start(
            &desc,
            &video_hub,
            &audio_hub,
            policy.pts_offset(),
            cfg.fps,
            format.clone(),
        ) {
            Ok(capture) => {
                let end = tokio::select! {
                    end = capture.wait(cfg.stall_timeout) => Some(end),
                    () = mark_running(&capture, &state) => None,
                    () = shutdown.cancelled() => None,
                };
                capture.stop();
                let reason = match end {
                    None => break,
                    Some(CaptureEnd::Eos) => "end of stream".to_owned(),
                    Some(CaptureEnd::Error(e)) => e,
                    Some(CaptureEnd::Stalled(d)) => {
                        format!("no video frame for {} ms", d.as_millis())
                    }
                };
                (reason, Some(capture.end_pts()))
            }
            Err(e) => (e.to_string(), None),
        };
        let Restart { failures, delay } = policy.failed(started, Instant::now(), end_pts);
        log::error!(
            "capture failed ({reason}); restart {failures} in {} ms",
            delay.as_millis()
        );
        state.send_replace(CaptureState::Restarting { failures, reason });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
    }
    state.send_replace(CaptureState::Stopped);
    video_hub.close();
    audio_hub.close();
}

/// Publishes [`CaptureState::Running`] once the capture has delivered its first video
/// frame (woken by the appsink callback, not polled); never resolves.
async fn mark_running(capture: &Capture, state: &watch::Sender<CaptureState>) {
    capture.first_video_frame().await;
    state.send_replace(CaptureState::Running);
    std::future::pending::<()>().await;
}
