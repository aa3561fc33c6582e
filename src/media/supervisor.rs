//! Capture supervision: runs the pipeline, and on a bus error, EOS or stall restarts it
//! with capped exponential backoff and jitter. Viewers stay subscribed to the hubs
//! throughout and resume at the next IDR; PTS stays continuous across restarts.

use super::VideoFormat;
use super::gst::{Capture, CaptureEnd};
use super::hub::Hub;
use super::pipeline::PipelineDesc;
use backon::BackoffBuilder;
use std::time::Duration;
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

/// Runs capture until `shutdown` is cancelled.
pub async fn run(
    desc: PipelineDesc,
    cfg: SupervisorConfig,
    video_hub: Hub,
    audio_hub: Hub,
    format: watch::Sender<Option<VideoFormat>>,
    state: watch::Sender<CaptureState>,
    shutdown: CancellationToken,
) {
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(cfg.min_backoff)
            .with_max_delay(cfg.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let mut pts_offset = Duration::ZERO;
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let reason = match Capture::start(
            &desc,
            &video_hub,
            &audio_hub,
            pts_offset,
            cfg.fps,
            format.clone(),
        ) {
            Ok(capture) => {
                let end = tokio::select! {
                    end = capture.wait(cfg.stall_timeout) => Some(end),
                    () = mark_running(&capture, state.clone()) => None,
                    () = shutdown.cancelled() => None,
                };
                capture.stop();
                // A 100 ms gap keeps RTP timestamps monotonic across the restart.
                pts_offset = capture.end_pts() + Duration::from_millis(100);
                match end {
                    None => break,
                    Some(CaptureEnd::Eos) => "end of stream".to_owned(),
                    Some(CaptureEnd::Error(e)) => e,
                    Some(CaptureEnd::Stalled(d)) => {
                        format!("no video frame for {} ms", d.as_millis())
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= cfg.healthy_after {
            backoff = new_backoff();
            failures = 0;
        }
        failures += 1;
        let delay = backoff.next().unwrap_or(cfg.max_backoff);
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
/// frame; never resolves.
async fn mark_running(capture: &Capture, state: watch::Sender<CaptureState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while capture.video_frames() == 0 {
        tick.tick().await;
    }
    state.send_replace(CaptureState::Running);
    std::future::pending::<()>().await;
}
