//! The one `rumqttc` adapter: connects to the broker, subscribes to this camera's
//! `to-camera` topics, publishes `to-viewer` messages and the retained status, and
//! reconnects with capped exponential backoff and jitter. Every ConnAck resubscribes
//! and republishes the latest status (a clean session forgets subscriptions). Live
//! WebRTC sessions do not depend on this link: media keeps flowing while it is down.

use super::protocol::{MAX_PAYLOAD_BYTES, SessionId, Status, ToViewer, Topics};
use crate::config::{BrokerScheme, BrokerUrl};
use crate::telemetry::{RateLimit, suppressed};
use backon::BackoffBuilder;
use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Largest MQTT packet accepted from the broker, bytes. Above the contract's 64 KiB so
/// an oversized message is still read and answered with `bad-request` rather than
/// breaking the connection.
const MAX_INCOMING_PACKET: usize = 16 * MAX_PAYLOAD_BYTES;

/// Errors setting up the MQTT link.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {problem}")]
    Ca {
        /// File.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker URL.
    pub url: BrokerUrl,
    /// MQTT client id.
    pub client_id: String,
    /// Username/password.
    pub credentials: Option<(String, String)>,
    /// PEM CA bundle for TLS; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub min_backoff: Duration,
    /// Reconnect delay cap.
    pub max_backoff: Duration,
    /// With Home Assistant enabled: also subscribe to [`Topics::snapshot_request`] and
    /// notify this on each message there. A `Notify` rather than the inbound queue, so
    /// that a flood of requests coalesces into one and never crowds out signaling.
    pub snapshot_requests: Option<Arc<tokio::sync::Notify>>,
}

/// Messages queued from the broker link to the camera loop. At the contract's 64 KiB
/// per message that holds at most 8 MiB; the loop takes each in microseconds, so only
/// a flood fills it, and then more are dropped (with a rate-limited log line).
pub const INBOUND_QUEUE: usize = 128;

/// What the link delivers to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A payload on `{session}`'s `to-camera` topic.
    Message {
        /// Session.
        session: SessionId,
        /// Raw payload.
        payload: Bytes,
    },
    /// Connected (or reconnected) to the broker.
    Connected,
    /// Lost the broker; reconnecting.
    Disconnected(String),
}

/// The link's connection state, for health reporting (`STATUS=`, `READY=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// First connection attempt under way.
    Connecting,
    /// CONNACK received; subscribed and status published.
    Connected,
    /// The broker is unreachable or refused us; retrying with backoff.
    Retrying {
        /// Failed attempts since the last successful connection.
        attempt: u64,
    },
}

/// A retained message kept for republishing: topic and payload.
type RetainedMessage = (String, Vec<u8>);

/// Sending half of the link; cheap to clone.
#[derive(Clone)]
pub struct MqttHandle {
    client: AsyncClient,
    topics: Topics,
    status: Arc<Mutex<Vec<u8>>>,
    /// Retained messages besides the status, republished on every ConnAck.
    retained: Arc<Mutex<Vec<RetainedMessage>>>,
    state: watch::Receiver<LinkState>,
    connects: Arc<AtomicU64>,
}

impl MqttHandle {
    /// Successful connections (CONNACKs) so far: the first one and every reconnect.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// The link's connection state, kept current by the link task.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Publishes `msg` on `session`'s `to-viewer` topic (QoS 1). Never blocks: while the
    /// broker is away the request queue fills and messages are dropped with a log line.
    pub fn send(&self, session: &SessionId, msg: &ToViewer) {
        self.send_payload(session, msg.to_json());
    }

    /// Publishes a prepared payload (a sealed message in invite mode) on `session`'s
    /// `to-viewer` topic (QoS 1, not retained).
    pub fn send_payload(&self, session: &SessionId, payload: Vec<u8>) {
        let topic = self.topics.to_viewer(session);
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            log::warn!(session_id = session.as_str(); "cannot queue message for viewer: {e}");
        }
    }

    /// Publishes a retained message (QoS 1) and remembers it for republishing on every
    /// reconnect, replacing one remembered for the same topic.
    pub fn publish_retained(&self, topic: String, payload: Vec<u8>) {
        {
            let mut kept = self.retained.lock().unwrap_or_else(|p| p.into_inner());
            kept.retain(|(t, _)| *t != topic);
            kept.push((topic.clone(), payload.clone()));
        }
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
        {
            log::warn!("cannot queue a retained message: {e}");
        }
    }

    /// Publishes `payload` on `topic` (QoS 0) while the link is up; drops it while the
    /// broker is away, so large periodic payloads (snapshots) never pile up in the
    /// request queue. Returns whether it was queued.
    pub fn publish_if_connected(&self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        if self.state() != LinkState::Connected {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtMostOnce, retain, payload)
        {
            Ok(()) => true,
            Err(e) => {
                log::warn!("cannot queue a message: {e}");
                false
            }
        }
    }

    /// Publishes the retained status and remembers it for republishing on reconnect.
    pub fn publish_status(&self, status: &Status) {
        let payload = status.to_json();
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = payload.clone();
        if let Err(e) =
            self.client
                .try_publish(self.topics.status(), QoS::AtLeastOnce, true, payload)
        {
            log::warn!("cannot queue status: {e}");
        }
    }
}

/// Checks that a TLS link to `url` could be set up with `ca_file` (the PEM bundle reads
/// and holds a certificate), without connecting: a reload's preflight.
///
/// # Errors
/// [`MqttError::Ca`] naming the file and the problem.
pub fn check_tls(url: &BrokerUrl, ca_file: Option<&PathBuf>) -> Result<(), MqttError> {
    match url.scheme {
        BrokerScheme::Mqtts | BrokerScheme::Wss => tls_config(ca_file).map(drop),
        BrokerScheme::Mqtt | BrokerScheme::Ws => Ok(()),
    }
}

fn tls_config(ca_file: Option<&PathBuf>) -> Result<TlsConfiguration, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_err = |problem: String| MqttError::Ca {
                path: path.clone(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ca_err(e.to_string()))?;
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificate in file".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

/// Starts the link. Returns the sending handle and the task driving the event loop;
/// inbound events go to `inbound`. On `shutdown` the task publishes the offline status,
/// disconnects, and ends.
///
/// # Errors
/// [`MqttError`] when TLS cannot be set up.
pub fn start(
    settings: MqttSettings,
    topics: Topics,
    initial_status: &Status,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) -> Result<(MqttHandle, tokio::task::JoinHandle<()>), MqttError> {
    let url = &settings.url;
    let mut options = match url.scheme {
        BrokerScheme::Mqtt | BrokerScheme::Mqtts => {
            MqttOptions::new(&settings.client_id, &url.host, url.port)
        }
        // rumqttc takes the whole URL as the host for WebSocket transports.
        BrokerScheme::Ws | BrokerScheme::Wss => {
            MqttOptions::new(&settings.client_id, &url.url, url.port)
        }
    };
    match url.scheme {
        BrokerScheme::Mqtt => {}
        BrokerScheme::Mqtts => {
            options.set_transport(Transport::tls_with_config(tls_config(
                settings.ca_file.as_ref(),
            )?));
        }
        BrokerScheme::Ws => {
            options.set_transport(Transport::Ws);
        }
        BrokerScheme::Wss => {
            options.set_transport(Transport::wss_with_config(tls_config(
                settings.ca_file.as_ref(),
            )?));
        }
    }
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET)
        .set_last_will(LastWill::new(
            topics.status(),
            Status::offline(topics.camera()).to_json(),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, pass)) = &settings.credentials {
        options.set_credentials(user, pass);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let (state_tx, state) = watch::channel(LinkState::Connecting);
    let handle = MqttHandle {
        client: client.clone(),
        topics: topics.clone(),
        status: Arc::new(Mutex::new(initial_status.to_json())),
        retained: Arc::default(),
        state,
        connects: Arc::default(),
    };
    let status = handle.status.clone();
    let retained = handle.retained.clone();
    let snapshot_requests = settings
        .snapshot_requests
        .clone()
        .map(|notify| (topics.snapshot_request(), notify));
    let connects = handle.connects.clone();
    let new_backoff = move || {
        backon::ExponentialBuilder::default()
            .with_min_delay(settings.min_backoff)
            .with_max_delay(settings.max_backoff)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let task = tokio::spawn(async move {
        let mut backoff = new_backoff();
        let mut connected = false;
        let mut failures: u64 = 0;
        let mut unreachable_log = RateLimit::new(Duration::from_secs(60));
        let mut flood_log = RateLimit::new(Duration::from_secs(10));
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                () = shutdown.cancelled() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    log::info!("connected to broker {}", settings.url.url);
                    connected = true;
                    failures = 0;
                    connects.fetch_add(1, Ordering::Relaxed);
                    state_tx.send_replace(LinkState::Connected);
                    backoff = new_backoff();
                    if let Err(e) =
                        client.try_subscribe(topics.to_camera_filter(), QoS::AtLeastOnce)
                    {
                        log::error!("cannot queue subscription: {e}");
                    }
                    if let Some((topic, _)) = &snapshot_requests
                        && let Err(e) = client.try_subscribe(topic.clone(), QoS::AtMostOnce)
                    {
                        log::error!("cannot queue subscription: {e}");
                    }
                    let payload = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Err(e) =
                        client.try_publish(topics.status(), QoS::AtLeastOnce, true, payload)
                    {
                        log::error!("cannot queue status: {e}");
                    }
                    let kept = retained.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    for (topic, payload) in kept {
                        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                            log::error!("cannot queue a retained message: {e}");
                        }
                    }
                    let _ = inbound.try_send(Inbound::Connected);
                }
                // A retained message on `to-camera` is delivered to every new subscriber
                // (MQTT 3.1.1 §3.3.1.3): an old or planted offer would be replayed at the
                // camera on each (re)connect. Live viewer messages are never retained.
                Ok(Event::Incoming(Packet::Publish(p))) if p.retain => {
                    if let Some(more) = flood_log.check(Instant::now()) {
                        log::warn!(
                            "ignoring a retained message on {:?}{}",
                            truncate(&p.topic),
                            suppressed(more)
                        );
                    }
                }
                // Any payload, even an empty one, asks for a snapshot.
                Ok(Event::Incoming(Packet::Publish(p)))
                    if snapshot_requests
                        .as_ref()
                        .is_some_and(|(t, _)| *t == p.topic) =>
                {
                    if let Some((_, notify)) = &snapshot_requests {
                        notify.notify_one();
                    }
                }
                // A zero-length publish is how MQTT deletes a retained message (3.1.1
                // §3.3.1.3; the embedded broker's sweeper sends them, and brokers pass
                // them on to subscribers): never a signaling message, so no `error`.
                Ok(Event::Incoming(Packet::Publish(p))) if p.payload.is_empty() => {
                    log::debug!("ignoring a zero-length message on {:?}", truncate(&p.topic));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => match topics.parse_to_camera(&p.topic) {
                    Some(Ok(session)) => {
                        if inbound
                            .try_send(Inbound::Message {
                                session,
                                payload: p.payload,
                            })
                            .is_err()
                            && let Some(more) = flood_log.check(Instant::now())
                        {
                            log::warn!("signaling queue full, message dropped{}", suppressed(more));
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(more) = flood_log.check(Instant::now()) {
                            log::warn!(
                                "dropping message on {:?}: {e}{}",
                                truncate(&p.topic),
                                suppressed(more)
                            );
                        }
                    }
                    None => log::debug!("ignoring message on {:?}", truncate(&p.topic)),
                },
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    state_tx.send_replace(LinkState::Retrying { attempt: failures });
                    if connected {
                        connected = false;
                        let _ = inbound.try_send(Inbound::Disconnected(e.to_string()));
                    }
                    let delay = backoff.next().unwrap_or(settings.max_backoff);
                    // A broker that stays away must not flood the journal.
                    if let Some(more) = unreachable_log.check(Instant::now()) {
                        log::warn!(
                            "broker {} unreachable ({e}); attempt {failures}, retrying in {} ms{}",
                            settings.url.url,
                            delay.as_millis(),
                            suppressed(more)
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        if connected {
            // Clean shutdown: mark offline ourselves (the Last Will fires only on an
            // unclean loss), then disconnect, flushing for at most 2 s.
            let offline = Status::offline(topics.camera()).to_json();
            let _ = client.try_publish(topics.status(), QoS::AtLeastOnce, true, offline);
            let _ = client.try_disconnect();
            let flush = async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
        }
    });
    Ok((handle, task))
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}
