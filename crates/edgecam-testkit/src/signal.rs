//! The viewer side of MQTT signaling, protocol 1 (`docs/signaling.md`), written once
//! for the suite, the benchmark's load viewers and the device lab.
//!
//! [`Signal`] is a raw client on one session's topics (bad-input tests publish
//! anything with it); [`ProbeSession`] runs a whole session with edgecam's probe
//! viewer: it subscribes to `to-viewer` and waits for the SUBACK (so the answer cannot
//! be missed), publishes the SDP offer, trickles its ICE candidates, applies the answer
//! and the camera's candidates, and records `error`/`bye`.

use bytes::Bytes;
use edgecam::access::keys::{Direction, Secret, ViewerKey};
use edgecam::peer::probe::{ProbeOptions, ProbeViewer};
use edgecam::signaling::protocol::CandidateInit;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a client waits for the broker to acknowledge its subscriptions.
const SUBACK_LIMIT: Duration = Duration::from_secs(10);

/// A viewer's invitation (`shared/design/access-v1.md`): its name, expiry (unix s)
/// and key. With one, a viewer signs what it sends and accepts only signed replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Viewer name.
    pub name: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// The viewer key `K`.
    pub key: ViewerKey,
}

impl Invitation {
    /// The invitation the camera with `secret` gives `name` for `camera`, valid until
    /// `exp` (what `edgecam invite` and a fleet backend mint).
    pub fn mint(secret: &Secret, camera: &str, name: &str, exp: u64) -> Self {
        Self {
            name: name.to_owned(),
            exp,
            key: ViewerKey::derive(secret, camera, name, exp),
        }
    }

    /// `msg` in a signed envelope for `session`; `offer`, `config-request` and `bye`
    /// get the viewer's clock as `ts` first (access-v1, "Freshness").
    pub fn seal(&self, camera: &str, session: &str, msg: &Value) -> Value {
        let mut msg = msg.clone();
        if matches!(
            msg["type"].as_str(),
            Some("offer" | "config-request" | "bye")
        ) {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            msg["ts"] = json!(ts);
        }
        let text = msg.to_string();
        let mac = self
            .key
            .message_mac(Direction::ViewerToCamera, camera, session, &text);
        json!({"type": "signed", "v": 1, "name": self.name, "exp": self.exp, "msg": text, "mac": mac})
    }

    /// The inner message of a camera → viewer envelope, if its MAC is right.
    pub fn open(&self, camera: &str, session: &str, envelope: &Value) -> Option<Value> {
        let (msg, mac) = (envelope["msg"].as_str()?, envelope["mac"].as_str()?);
        self.key
            .verify_message(Direction::CameraToViewer, camera, session, msg, mac)
            .then(|| serde_json::from_str(msg).ok())
            .flatten()
    }
}

/// Where a viewer signals: a broker on 127.0.0.1 and one session's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Broker's MQTT/TCP port on 127.0.0.1.
    pub port: u16,
    /// Topic prefix (contract default `edgecam`).
    pub prefix: String,
    /// Camera id.
    pub camera: String,
    /// Session id, also the MQTT client id (contract, "Topics").
    pub session: String,
    /// The invitation to sign with, for a camera in invite mode.
    pub invitation: Option<Invitation>,
    /// MQTT user name and password; default: the invitation's name and token, if any.
    pub login: Option<(String, String)>,
}

impl Endpoint {
    /// Session `session` of `camera` under the default prefix, through the broker on
    /// 127.0.0.1:`port`.
    pub fn new(port: u16, camera: &str, session: &str) -> Self {
        Self {
            port,
            prefix: "edgecam".to_owned(),
            camera: camera.to_owned(),
            session: session.to_owned(),
            invitation: None,
            login: None,
        }
    }

    /// This endpoint, signing with `invitation`.
    pub fn invited(mut self, invitation: Invitation) -> Self {
        self.invitation = Some(invitation);
        self
    }

    /// `msg` as this endpoint sends it: signed with its invitation, if any.
    pub fn wrap(&self, msg: &Value) -> Value {
        match &self.invitation {
            Some(inv) => inv.seal(&self.camera, &self.session, msg),
            None => msg.clone(),
        }
    }

    /// A camera → viewer payload as this endpoint accepts it: without an invitation as
    /// it is; with one, a signed envelope opened, a plain `error` or `candidate` as it
    /// is (access-v1 lets both go unsigned to strangers), and anything else `None`.
    pub fn unwrap_reply(&self, msg: Value) -> Option<Value> {
        let Some(inv) = &self.invitation else {
            return Some(msg);
        };
        match msg["type"].as_str() {
            Some("signed") => inv.open(&self.camera, &self.session, &msg),
            Some("error" | "candidate") => Some(msg),
            _ => None,
        }
    }

    fn topic(&self, leaf: &str) -> String {
        format!(
            "{}/{}/session/{}/{leaf}",
            self.prefix, self.camera, self.session
        )
    }
}

/// A raw MQTT client on one session's topics.
pub struct Signal {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    /// `…/to-camera` topic of this session.
    pub to_camera: String,
    endpoint: Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl Signal {
    /// Connects as client `session` through the broker on 127.0.0.1:`port`, subscribes
    /// to the session's `to-viewer` topic (and `extra` filters) and waits until the
    /// broker acknowledged them.
    ///
    /// # Panics
    /// When the broker does not acknowledge in time (a test set-up failure).
    pub async fn connect(port: u16, camera: &str, session: &str, extra: &[&str]) -> Self {
        Self::open(&Endpoint::new(port, camera, session), extra)
            .await
            .unwrap_or_else(|e| panic!("signaling client {session}: {e}"))
    }

    /// As [`Signal::connect`], for any [`Endpoint`].
    ///
    /// # Errors
    /// When subscribing fails or the broker does not acknowledge within 10 s.
    pub async fn open(ep: &Endpoint, extra: &[&str]) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(&ep.session, "127.0.0.1", ep.port);
        opts.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, pass)) = &ep.login {
            opts.set_credentials(user, pass);
        } else if let Some(inv) = &ep.invitation {
            // The embedded broker in invite mode admits the name with its token.
            opts.set_credentials(&inv.name, inv.key.token(&ep.camera, &inv.name, inv.exp));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let mut filters = vec![ep.topic("to-viewer")];
        filters.extend(extra.iter().map(|s| (*s).to_owned()));
        for f in &filters {
            client.subscribe(f, QoS::AtLeastOnce).await?;
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
                    // rumqttc reconnects on the next poll; the pause keeps a dead
                    // broker from turning this into a busy loop.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for _ in &filters {
            let acked = tokio::time::timeout(SUBACK_LIMIT, ready_rx.recv()).await;
            if !matches!(acked, Ok(Some(()))) {
                task.abort();
                anyhow::bail!("no SUBACK within {SUBACK_LIMIT:?}");
            }
        }
        Ok(Self {
            client,
            rx,
            to_camera: ep.topic("to-camera"),
            endpoint: ep.clone(),
            task,
        })
    }

    /// A handle that publishes on this session's `to-camera` topic from other tasks.
    pub fn sender(&self) -> Sender {
        Sender {
            client: self.client.clone(),
            to_camera: self.to_camera.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    /// Publishes raw bytes on this session's `to-camera` topic.
    ///
    /// # Panics
    /// When the client's request queue is gone (its event loop ended).
    pub async fn publish_raw(&self, payload: impl Into<Vec<u8>>) {
        self.publish_to(&self.to_camera.clone(), payload).await;
    }

    /// Publishes raw bytes on any topic.
    ///
    /// # Panics
    /// When the client's request queue is gone (its event loop ended).
    pub async fn publish_to(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// Publishes raw bytes on any topic with the retain flag set.
    ///
    /// # Panics
    /// When the client's request queue is gone (its event loop ended).
    pub async fn publish_retained_to(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.into())
            .await
            .expect("publish");
    }

    /// Publishes a JSON message on `to-camera`, signed when the endpoint has an
    /// invitation.
    pub async fn send(&self, msg: &Value) {
        self.publish_raw(self.endpoint.wrap(msg).to_string()).await;
    }

    /// The next message (topic, JSON; `null` when not JSON) within `limit`.
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

    /// The next `error` on `to-viewer` (within 10 s), checked to carry `code` and a
    /// message.
    ///
    /// # Panics
    /// When another message or none comes first (a test assertion).
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

    /// Checks that nothing arrives on `to-viewer` for `window`.
    ///
    /// # Panics
    /// When something does (a test assertion).
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

/// Publishes on one session's `to-camera` topic.
#[derive(Clone)]
pub struct Sender {
    client: AsyncClient,
    to_camera: String,
    endpoint: Endpoint,
}

impl Sender {
    /// Publishes `msg` (QoS 1); a failure is printed, not returned: the session's
    /// report shows what it cost.
    pub async fn send(&self, msg: &Value) {
        if let Err(e) = self
            .client
            .publish(
                &self.to_camera,
                QoS::AtLeastOnce,
                false,
                self.endpoint.wrap(msg).to_string(),
            )
            .await
        {
            eprintln!("publish on {}: {e}", self.to_camera);
        }
    }

    /// Disconnects the MQTT client.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// What arrived over signaling in one [`ProbeSession`].
#[derive(Debug, Default, Clone)]
pub struct SignalingLog {
    /// The answer SDP, once received.
    pub answer: Option<String>,
    /// `candidate:` lines the camera trickled.
    pub remote_candidates: Vec<String>,
    /// `error` and `bye` messages received.
    pub ended: Vec<Value>,
    /// Answers or candidates the probe could not apply.
    pub failures: Vec<String>,
    /// Camera messages dropped for a missing or wrong signature (invite mode).
    pub rejected: Vec<Value>,
}

/// A probe viewer running one session over MQTT signaling.
pub struct ProbeSession {
    /// Session id.
    pub session: String,
    /// The WebRTC side.
    pub probe: Arc<ProbeViewer>,
    sender: Sender,
    log: Arc<Mutex<SignalingLog>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _signal: Signal,
}

impl ProbeSession {
    /// Subscribes, builds a probe with `options`, publishes its offer and runs the
    /// session's signaling in background tasks until [`ProbeSession::leave`] or drop.
    ///
    /// # Errors
    /// When the broker does not acknowledge the subscription or the probe cannot be
    /// built or make an offer.
    pub async fn join(ep: &Endpoint, options: ProbeOptions) -> anyhow::Result<Self> {
        let mut signal = Signal::open(ep, &[]).await?;
        let sender = signal.sender();
        let (probe, mut local_rx) = ProbeViewer::new(options).await?;
        let probe = Arc::new(probe);
        let offer = probe.create_offer().await?;
        sender.send(&json!({"type": "offer", "sdp": offer})).await;
        let log = Arc::new(Mutex::new(SignalingLog::default()));
        let mut tasks = Vec::new();
        {
            let sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                // `None` from the probe is end-of-candidates, sent as `null`.
                while let Some(c) = local_rx.recv().await {
                    sender
                        .send(&json!({"type": "candidate", "candidate": c}))
                        .await;
                }
            }));
        }
        {
            let (probe, log, ep) = (probe.clone(), log.clone(), ep.clone());
            let mut rx = std::mem::replace(&mut signal.rx, mpsc::unbounded_channel().1);
            tasks.push(tokio::spawn(async move {
                while let Some((_, payload)) = rx.recv().await {
                    let msg: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    match ep.unwrap_reply(msg.clone()) {
                        Some(inner) => handle(&probe, &log, inner).await,
                        None => log
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .rejected
                            .push(msg),
                    }
                }
            }));
        }
        Ok(Self {
            session: ep.session.clone(),
            probe,
            sender,
            log,
            tasks,
            _signal: signal,
        })
    }

    /// A copy of what arrived over signaling so far.
    pub fn log(&self) -> SignalingLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes `msg` on this session's `to-camera` topic.
    pub async fn send(&self, msg: &Value) {
        self.sender.send(msg).await;
    }

    /// Restarts ICE on the live session: an ICE restart offer on the same session id
    /// (signaling-v1: a renegotiation), whose answer and candidates the background
    /// task applies as for the first offer.
    ///
    /// # Errors
    /// When the probe cannot create the offer.
    pub async fn restart_ice(&self) -> anyhow::Result<()> {
        let offer = self.probe.restart_ice().await?;
        self.sender
            .send(&json!({"type": "offer", "sdp": offer}))
            .await;
        Ok(())
    }

    /// Sends `bye` and closes the peer connection (the MQTT connection stays).
    pub async fn bye(&self) {
        self.sender.send(&json!({"type": "bye"})).await;
        // `send` only queues it for the MQTT event loop, which the caller may drop next
        // (it did, once: the camera never heard the bye and kept the slot until ICE
        // timed out): give the bye its moment on the wire, as `leave` does.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.probe.close().await;
    }

    /// Sends `bye`, closes the peer connection and disconnects from the broker.
    pub async fn leave(self) {
        self.sender.send(&json!({"type": "bye"})).await;
        // Give the bye its moment on the wire before the connection goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.probe.close().await;
        self.sender.disconnect().await;
    }
}

impl Drop for ProbeSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Applies one camera → viewer message to the probe and the log.
async fn handle(probe: &ProbeViewer, log: &Mutex<SignalingLog>, msg: Value) {
    let record =
        |f: &dyn Fn(&mut SignalingLog)| f(&mut log.lock().unwrap_or_else(|p| p.into_inner()));
    match msg["type"].as_str() {
        Some("answer") => {
            let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
            record(&|l| l.answer = Some(sdp.clone()));
            if let Err(e) = probe.apply_answer(sdp).await {
                record(&|l| l.failures.push(format!("answer: {e}")));
            }
        }
        Some("candidate") => {
            // `null` is end-of-candidates (contract, trickle ICE).
            match serde_json::from_value::<Option<CandidateInit>>(msg["candidate"].clone()) {
                Ok(c) => {
                    if let Some(c) = &c {
                        let line = c.candidate.clone();
                        record(&|l| l.remote_candidates.push(line.clone()));
                    }
                    if let Err(e) = probe.add_candidate(c).await {
                        record(&|l| l.failures.push(format!("candidate: {e}")));
                    }
                }
                Err(e) => record(&|l| l.failures.push(format!("bad candidate: {e}"))),
            }
        }
        Some("error" | "bye") => record(&|l| l.ended.push(msg.clone())),
        _ => {}
    }
}
