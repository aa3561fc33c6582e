//! The Home Assistant task (`[homeassistant] enabled`): publishes the discovery configs
//! (`crate::homeassistant`), a JPEG on the camera entity's topic at the configured
//! interval and on request, and the telemetry its sensors read.

use super::stats::PeerView;
use crate::budget::Bucket;
use crate::homeassistant::{Discovery, Telemetry};
use crate::media::hub::Hub;
use crate::media::snapshot::{self, Snapshots};
use crate::signaling::mqtt::MqttHandle;
use crate::telemetry::{RateLimit, suppressed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the task reads and where it publishes.
pub(super) struct HomeAssistant {
    pub discovery: Discovery,
    pub link: MqttHandle,
    pub snapshots: Snapshots,
    pub video: Hub,
    pub audio: Hub,
    pub peers: Arc<Mutex<PeerView>>,
    /// `None`: snapshots on request only.
    pub snapshot_interval: Option<Duration>,
    /// Between telemetry messages (figures are averaged over it).
    pub telemetry_interval: Duration,
    /// Notified by the MQTT link for each message on the snapshot-request topic.
    pub requests: Arc<Notify>,
}

impl HomeAssistant {
    /// Runs until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        for config in self.discovery.configs() {
            self.link
                .publish_retained(config.topic, config.payload.to_string().into_bytes());
        }
        log::info!(
            "Home Assistant discovery published under {}/…/edgecam_{}",
            self.discovery.prefix,
            self.discovery.topics.camera()
        );
        // The first message comes one interval in: an average over nothing says nothing.
        let mut telemetry = tokio::time::interval_at(
            tokio::time::Instant::now() + self.telemetry_interval,
            self.telemetry_interval,
        );
        telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut periodic = self.snapshot_interval.map(|every| {
            let mut i = tokio::time::interval(every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        // Requests come from anyone who may publish on the broker's request topic.
        let mut budget = Bucket::new(2, 1.0);
        let mut refused = RateLimit::new(Duration::from_secs(60));
        let mut last = (Instant::now(), self.bytes_and_frames());
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = telemetry.tick() => {
                    let now = Instant::now();
                    let counts = self.bytes_and_frames();
                    self.publish_telemetry(now.duration_since(last.0), last.1, counts);
                    last = (now, counts);
                }
                _ = async { periodic.as_mut().expect("guarded").tick().await }, if periodic.is_some() => {
                    self.publish_snapshot().await;
                }
                () = self.requests.notified() => {
                    if budget.take(Instant::now()) {
                        self.publish_snapshot().await;
                    } else if let Some(held_back) = refused.check(Instant::now()) {
                        log::info!("snapshot request over MQTT ignored: more than 1 per second{}", suppressed(held_back));
                    }
                }
            }
        }
    }

    /// Bytes and video frames the encoders delivered since start.
    fn bytes_and_frames(&self) -> (u64, u64) {
        let (v, a) = (self.video.stats(), self.audio.stats());
        (v.published_bytes + a.published_bytes, v.published)
    }

    fn publish_telemetry(&self, over: Duration, before: (u64, u64), now: (u64, u64)) {
        let secs = over.as_secs_f64().max(0.001);
        let viewers = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sessions
            .len();
        let t = Telemetry {
            viewers: u32::try_from(viewers).unwrap_or(u32::MAX),
            // Rounded figures; u64 bits over seconds stay far inside f64's exact range.
            bitrate_kbps: ((now.0.saturating_sub(before.0) * 8) as f64 / secs / 1000.0).round()
                as u64,
            fps: ((now.1.saturating_sub(before.1)) as f64 / secs * 10.0).round() / 10.0,
        };
        if let Ok(json) = serde_json::to_vec(&t) {
            self.link
                .publish_if_connected(self.discovery.topics.telemetry(), json, false);
        }
    }

    async fn publish_snapshot(&self) {
        match self
            .snapshots
            .take(snapshot::FRESH, snapshot::TIMEOUT)
            .await
        {
            // Retained: Home Assistant shows the last picture after its own restart.
            Ok(jpeg) => {
                self.link.publish_if_connected(
                    self.discovery.topics.snapshot(),
                    jpeg.data.to_vec(),
                    true,
                );
            }
            Err(e) => log::info!("no snapshot for Home Assistant: {e}"),
        }
    }
}
