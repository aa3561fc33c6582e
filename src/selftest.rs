//! `edgecam selftest`: the whole media path on this machine, without a broker or a
//! network. The configured capture (or the test pattern and tone) goes through the real
//! encoder, the hub and a real viewer session into a [`ProbeViewer`] over loopback ICE;
//! the report says what arrived and how fast. Signaling is short-circuited in-process:
//! the probe's SDP offer and trickled candidates go straight to the session registry and
//! its answer and candidates straight back, exactly the messages MQTT would carry.

use crate::app::{self, Capture};
use crate::config::{AudioSource, Config, VideoSource};
use crate::media::gst;
use crate::media::pipeline::AudioPlan;
use crate::peer::probe::{ProbeOptions, ProbeReport, ProbeViewer};
use crate::peer::stats::LatencySummary;
use crate::peer::{MediaFeeds, PeerReport, PeerSettings, Peers, PortPool};
use crate::signaling::machine::{PeerCommand, PeerEvent};
use crate::signaling::protocol::Id;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest wait for the encoder's first frame (a Pi's camera and encoder start in
/// ~1 s; emulators and cold GStreamer registries take longer).
const FIRST_FRAME_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for the loopback connection to come up.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// What to test.
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    /// How long to receive once connected.
    pub duration: Duration,
    /// Use the test pattern and tone instead of the configured sources (the encoder is
    /// still the configured one).
    pub test_source: bool,
}

/// What the self-test measured. Times are ms.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelftestReport {
    /// The pipeline that ran (source, encoder, audio).
    pub pipeline: String,
    /// Capture start to the first encoded frame, ms.
    pub start_to_first_frame_ms: f64,
    /// What the loopback viewer received.
    pub viewer: ProbeReport,
    /// Received frames per second over the receive window.
    pub fps: f64,
    /// Capture (buffer PTS) to RTP send, per frame.
    pub capture_to_rtp: LatencySummary,
    /// Whether audio was expected.
    pub audio_expected: bool,
    /// `None` when the test passed, else why not.
    pub failure: Option<String>,
}

impl SelftestReport {
    /// Whether frames arrived, the first was an IDR with SPS/PPS, and Opus packets came
    /// when the pipeline has audio.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    fn judge(&mut self) {
        let v = &self.viewer;
        self.failure = if v.video_frames == 0 {
            Some("no video frame received".into())
        } else if v.first_frame_idr_with_sps_pps != Some(true) {
            Some("the first frame was not an IDR with SPS and PPS".into())
        } else if self.audio_expected && v.opus_packets == 0 {
            Some("no Opus packet received".into())
        } else {
            None
        };
    }
}

impl std::fmt::Display for SelftestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| d.map_or_else(|| "-".into(), |d| d.as_millis().to_string());
        let v = &self.viewer;
        writeln!(f, "pipeline: {}", self.pipeline)?;
        writeln!(
            f,
            "start → first encoded frame: {:.0} ms",
            self.start_to_first_frame_ms
        )?;
        writeln!(
            f,
            "offer → connected: {} ms; offer → first frame: {} ms (IDR with SPS/PPS: {})",
            ms(v.connected_after_offer),
            ms(v.first_frame_after_offer),
            v.first_frame_idr_with_sps_pps.unwrap_or(false)
        )?;
        writeln!(
            f,
            "received: {} frames ({} keyframes) at {:.1} fps, {} Opus packets",
            v.video_frames, v.keyframes, self.fps, v.opus_packets
        )?;
        writeln!(
            f,
            "capture → RTP send: p50 {} ms, p99 {} ms over {} frames",
            self.capture_to_rtp.p50_ms, self.capture_to_rtp.p99_ms, self.capture_to_rtp.count
        )?;
        match &self.failure {
            None => write!(f, "selftest passed"),
            Some(why) => write!(f, "selftest FAILED: {why}"),
        }
    }
}

/// Runs the self-test on `config`'s capture settings.
///
/// # Errors
/// When the pipeline cannot be planned, the encoder produces nothing within 30 s, the
/// session refuses the offer or fails, or the connection does not come up within 20 s.
/// A run that connects but receives too little is a report with `failure` set.
pub async fn run(mut config: Config, options: &SelftestOptions) -> anyhow::Result<SelftestReport> {
    app::install_crypto_provider();
    gst::init()?;
    if options.test_source {
        config.video.source = VideoSource::Test;
        config.audio.source = AudioSource::Test;
    }
    let desc = app::plan(&config)?;
    let pipeline = desc.to_string();
    let audio_expected = desc.audio != AudioPlan::None;
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let capture = app::start_capture(&config, desc, &tracker, stop.clone());
    let result = receive(&capture, &tracker, &stop, started, options).await;
    stop.cancel();
    tracker.close();
    let _ = tokio::time::timeout(app::SHUTDOWN_DEADLINE, tracker.wait()).await;
    let (start_to_first_frame, viewer, capture_to_rtp) = result?;
    let mut report = SelftestReport {
        pipeline,
        start_to_first_frame_ms: start_to_first_frame.as_secs_f64() * 1000.0,
        fps: viewer.fps(),
        viewer,
        capture_to_rtp,
        audio_expected,
        failure: None,
    };
    report.judge();
    Ok(report)
}

async fn receive(
    capture: &Capture,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    started: Instant,
    options: &SelftestOptions,
) -> anyhow::Result<(Duration, ProbeReport, LatencySummary)> {
    let mut format = capture.format.clone();
    tokio::time::timeout(FIRST_FRAME_LIMIT, format.wait_for(Option::is_some))
        .await
        .map_err(|_| anyhow::anyhow!("no encoded frame within {FIRST_FRAME_LIMIT:?}"))??;
    let start_to_first_frame = started.elapsed();

    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (events_tx, mut events) = mpsc::channel::<PeerReport>(crate::peer::REPORT_QUEUE);
    let mut peers = Peers::new(
        PeerSettings {
            camera: "selftest".into(),
            udp_bind: vec![loopback],
            ports: PortPool::new(None),
            ..PeerSettings::default()
        },
        MediaFeeds {
            video: capture.video.clone(),
            audio: capture.has_audio.then(|| capture.audio.clone()),
            vp8: capture.vp8.clone(),
            ladder: capture.ladder.clone(),
            withheld: capture.withheld.clone(),
            format: capture.format.clone(),
            snapshots: capture.snapshots.clone(),
            talk: None,
        },
        events_tx,
        tracker.clone(),
        stop.child_token(),
    );
    let (probe, mut local) = ProbeViewer::new(ProbeOptions {
        udp_addrs: vec![format!("{loopback}:0")],
        ..ProbeOptions::default()
    })
    .await?;
    let session = Id::parse("selftest")?;
    let sdp = probe.create_offer().await?;
    peers.command(PeerCommand::Offer {
        session: session.clone(),
        sdp,
    });

    let connect_by = tokio::time::Instant::now() + CONNECT_LIMIT;
    let mut receive_until: Option<tokio::time::Instant> = None;
    let outcome = loop {
        let deadline = receive_until.unwrap_or(connect_by);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                break match receive_until {
                    Some(_) => Ok(()),
                    None => Err(anyhow::anyhow!("loopback connection not up within {CONNECT_LIMIT:?}")),
                };
            }
            Some(c) = local.recv() => peers.command(PeerCommand::AddCandidate {
                session: session.clone(),
                candidate: c,
            }),
            Some(report) = events.recv() => match report.event {
                PeerEvent::Answer(sdp) => probe.apply_answer(sdp).await?,
                PeerEvent::LocalCandidate(c) => probe.add_candidate(c).await?,
                PeerEvent::Connected => {
                    receive_until = Some(tokio::time::Instant::now() + options.duration);
                }
                PeerEvent::OfferRejected { code, message } => {
                    break Err(anyhow::anyhow!("session refused the offer: {code:?}: {message}"));
                }
                PeerEvent::Failed(why) => break Err(anyhow::anyhow!("session failed: {why}")),
                PeerEvent::Aborted(why) => break Err(anyhow::anyhow!("session aborted: {why}")),
            },
        }
    };
    let report = probe.report();
    peers.command(PeerCommand::Close { session });
    probe.close().await;
    outcome.map(|()| (start_to_first_frame, report, peers.latency().summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(frames: u64, idr: Option<bool>, opus: u64, audio_expected: bool) -> SelftestReport {
        let mut r = SelftestReport {
            pipeline: "video test pattern, encoder X264, audio test tone".into(),
            start_to_first_frame_ms: 100.0,
            viewer: ProbeReport {
                video_frames: frames,
                first_frame_idr_with_sps_pps: idr,
                opus_packets: opus,
                ..ProbeReport::default()
            },
            fps: 30.0,
            capture_to_rtp: LatencySummary {
                count: frames,
                p50_ms: 5.0,
                p99_ms: 9.0,
                max_ms: 10.0,
            },
            audio_expected,
            failure: None,
        };
        r.judge();
        r
    }

    #[test]
    fn passes_only_with_frames_an_idr_first_and_audio_when_expected() {
        assert!(report(60, Some(true), 100, true).passed());
        assert!(report(60, Some(true), 0, false).passed());
        let none = report(0, None, 100, true);
        assert_eq!(none.failure.as_deref(), Some("no video frame received"));
        assert!(!report(60, Some(false), 100, true).passed());
        let mute = report(60, Some(true), 0, true);
        assert_eq!(mute.failure.as_deref(), Some("no Opus packet received"));
        assert!(
            mute.to_string()
                .ends_with("selftest FAILED: no Opus packet received")
        );
    }
}
