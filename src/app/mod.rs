//! Wires everything: capture supervisor → hubs → peer sessions, the signaling machine
//! driven by the MQTT link, the embedded broker and the viewer page. The only module
//! that knows all the others. Shutdown is passed in.

mod admission;
mod homeassistant;
mod plan;
pub mod reload;
mod stats;
mod status;
mod whep;

use crate::talk::Talkback;
use admission::Admission;
pub use plan::{install_crypto_provider, plan, preflight, probe};
pub use stats::ApiStats;
use status::StatusBuilder;

use crate::broker;
use crate::config::{BrokerUrl, Config, Nat1To1Type};
use crate::ice::{IcePolicy, unix_now};
use crate::media::hub::Hub;
use crate::media::pipeline::{AudioPlan, PipelineDesc};
use crate::media::snapshot::{self, Snapshots};
use crate::media::supervisor::{self, CaptureState, SupervisorConfig};
use crate::media::{VideoFormat, gst};
use crate::peer::adapt::LadderRung;
use crate::peer::{Frontend, MediaFeeds, PeerReport, PeerSettings, Peers, PortPool};
use crate::service::{Health, HealthPolicy, Notifier, Observation};
use crate::signaling::machine::{Limits, Machine, Output, PeerCommand};
use crate::signaling::mqtt::{self, Inbound, MqttHandle, MqttSettings};
use crate::signaling::protocol::{AudioInfo, Topics};
use crate::web;
use anyhow::Context as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown may take before edgecam gives up waiting (below systemd's
/// default `TimeoutStopSec=` of 90 s, and the unit's 10 s).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// The capture side as the rest of edgecam sees it: the hubs the supervisor feeds and
/// what it reports.
pub struct Capture {
    /// H.264 access units.
    pub video: Hub,
    /// Opus packets (empty without audio).
    pub audio: Hub,
    /// Whether the pipeline has an audio branch.
    pub has_audio: bool,
    /// The VP8 rung, `None` when the pipeline has none (`[video] vp8_bitrate_kbps = 0`,
    /// no `vp8enc`, or a passed-through camera without decoder).
    pub vp8: Option<LadderRung>,
    /// The H.264 ladder, highest first: the main rung (`video`), then the low rung if
    /// the pipeline has one.
    pub ladder: Vec<LadderRung>,
    /// How many of the ladder's lowest rungs are withheld (`media::shed`): 0 or 1.
    pub withheld: watch::Receiver<usize>,
    /// Times the low rung was withheld since start.
    pub rung_sheds: Arc<std::sync::atomic::AtomicU64>,
    /// What the encoder emits, `None` until its first keyframe.
    pub format: watch::Receiver<Option<VideoFormat>>,
    /// The supervisor's state.
    pub state: watch::Receiver<CaptureState>,
    /// The pipeline running now, in words (changes on fallback or re-encode).
    pub source: watch::Receiver<String>,
    /// Capture runs that ended in failure since start.
    pub failures: Arc<std::sync::atomic::AtomicU64>,
    /// JPEG snapshots of the current picture.
    pub snapshots: Snapshots,
}

/// Starts the capture supervisor for `desc` on `tracker`; it runs until `stop`.
pub fn start_capture(
    config: &Config,
    desc: PipelineDesc,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Capture {
    let video = Hub::new(
        "video",
        config.video.viewer_queue_frames,
        true,
        Duration::from_millis(200),
    );
    let audio = Hub::new("audio", 50, false, Duration::from_millis(200));
    let rung_hub = |name| {
        Hub::new(
            name,
            config.video.viewer_queue_frames,
            true,
            Duration::from_millis(200),
        )
    };
    let (vp8, low) = (rung_hub("vp8"), rung_hub("low"));
    let vp8_rung = desc.vp8.map(|r| LadderRung {
        name: "vp8",
        hub: vp8.clone(),
        bitrate_kbps: r.bitrate_kbps,
        width: r.width,
        height: r.height,
    });
    let (main_w, main_h) = desc
        .mode
        .as_ref()
        .map_or((config.video.width, config.video.height), |n| {
            (n.mode.width, n.mode.height)
        });
    let mut ladder = vec![LadderRung {
        name: "main",
        hub: video.clone(),
        bitrate_kbps: config.video.bitrate_kbps,
        width: main_w,
        height: main_h,
    }];
    if let Some(r) = desc.low {
        ladder.push(LadderRung {
            name: "low",
            hub: low.clone(),
            bitrate_kbps: r.bitrate_kbps,
            width: r.width,
            height: r.height,
        });
    }
    let (withheld_tx, withheld) = watch::channel(0usize);
    let rung_sheds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if desc.low.is_some() {
        tracker.spawn(crate::media::shed::run(
            (video.clone(), low.clone()),
            desc.fps(config.video.fps),
            withheld_tx,
            rung_sheds.clone(),
            stop.child_token(),
        ));
    }
    let has_audio = desc.audio != AudioPlan::None;
    let (format_tx, format) = watch::channel::<Option<VideoFormat>>(None);
    let (state_tx, state) = watch::channel(CaptureState::Starting);
    let (source_tx, source) = watch::channel(desc.to_string());
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let snapshots = Snapshots::default();
    let fps = desc.fps(config.video.fps);
    let fallback = desc.fallback.clone().map(|fb| supervisor::Fallback {
        device: config.video.device.clone(),
        desc: *fb,
    });
    tracker.spawn(supervisor::run(
        desc,
        fallback,
        SupervisorConfig {
            stall_timeout: Duration::from_millis(config.video.stall_timeout_ms.into()),
            // Retries stay at most 1 s apart (2 s with jitter): a source that comes back
            // (a camera re-plugged, a feed restarted) is streamed again within about
            // 2 s, and viewers resume at its first IDR. A failed start costs a few ms.
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(1),
            healthy_after: Duration::from_secs(30),
            fps,
            passthrough_patience: crate::media::pipeline::passthrough_patience(
                config.video.keyframe_interval_ms,
            ),
        },
        crate::media::Outputs {
            video: video.clone(),
            audio: audio.clone(),
            vp8: vp8.clone(),
            low: low.clone(),
            snapshots: snapshots.clone(),
        },
        supervisor::SupervisorOutputs {
            format: format_tx,
            state: state_tx,
            source: source_tx,
            failures: failures.clone(),
        },
        stop,
    ));
    Capture {
        video,
        audio,
        has_audio,
        vp8: vp8_rung,
        ladder,
        withheld,
        rung_sheds,
        format,
        state,
        source,
        failures,
        snapshots,
    }
}

/// Starts edgecam for `config`: plans the pipeline, starts capture, the broker (embedded
/// or configured), the MQTT link, the peer registry and the HTTP server. What it started
/// is stopped again when a later step fails, so a failed start leaves the device and
/// the ports free (a reload can then go back to the previous configuration).
///
/// # Errors
/// Start-up failures (pipeline plan, broker or HTTP listeners, TLS set-up).
pub async fn start(config: Config) -> anyhow::Result<Camera> {
    let started = Instant::now();
    let tracker = TaskTracker::new();
    let stops = Stops::default();
    match start_parts(config, started, &tracker, &stops).await {
        Ok(camera) => Ok(camera),
        Err(e) => {
            stops.cancel_all();
            tracker.close();
            let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait()).await;
            Err(e)
        }
    }
}

/// The stop signals of each part, cancelled in the shutdown order.
#[derive(Default, Clone)]
struct Stops {
    mqtt: CancellationToken,
    peers: CancellationToken,
    capture: CancellationToken,
    http: CancellationToken,
}

impl Stops {
    fn cancel_all(&self) {
        self.mqtt.cancel();
        self.peers.cancel();
        self.capture.cancel();
        self.http.cancel();
    }
}

async fn start_parts(
    config: Config,
    started: Instant,
    tracker: &TaskTracker,
    stops: &Stops,
) -> anyhow::Result<Camera> {
    let notifier = Notifier::from_env();
    install_crypto_provider();
    gst::init()?;
    let camera = config.camera_id();
    let topics = Topics::new(&config.signaling.prefix, camera.clone());
    let admission = Admission::from_config(&config, camera.as_str())?;
    let desc = plan(&config)?;
    let fps = desc.fps(config.video.fps);
    let capture_mode = desc.mode.as_ref().map(|n| n.mode.clone());
    let ice = IcePolicy::from_config(&config.webrtc);

    let Capture {
        video: video_hub,
        audio: audio_hub,
        has_audio,
        vp8: vp8_hub,
        ladder,
        withheld,
        rung_sheds,
        format: format_rx,
        state: state_rx,
        source: source_rx,
        failures: capture_failures,
        snapshots,
    } = start_capture(&config, desc, tracker, stops.capture.clone());

    // Broker: configured, or the embedded one.
    let (broker_url, credentials) = match &config.signaling.broker {
        Some(url) => (
            url.clone(),
            // The configured username (and password or password file) wins over
            // credentials written into the URL.
            config
                .signaling
                .username
                .clone()
                .map(|u| (u, config.signaling.password.clone().unwrap_or_default()))
                .or_else(|| url.userinfo.clone()),
        ),
        None => {
            let started = broker::start(&config.broker, admission.broker(), &topics.status())?;
            let addr = loopback_if_unspecified(started.listen);
            (
                BrokerUrl::parse(&format!("mqtt://{addr}")).map_err(|e| anyhow::anyhow!(e))?,
                started.camera_login.or_else(|| {
                    config
                        .broker
                        .username
                        .clone()
                        .map(|u| (u, config.broker.password.clone().unwrap_or_default()))
                }),
            )
        }
    };

    let broker_display = broker_url.url.clone();
    let status = StatusBuilder {
        camera: camera.to_string(),
        name: config
            .camera
            .name
            .clone()
            .unwrap_or_else(|| camera.to_string()),
        max_viewers: config.webrtc.max_viewers,
        fps,
        width: capture_mode
            .as_ref()
            .map_or(config.video.width, |m| m.width),
        height: capture_mode
            .as_ref()
            .map_or(config.video.height, |m| m.height),
        audio: has_audio.then(|| AudioInfo {
            codec: "opus".into(),
            rate: 48_000,
            channels: config.audio.channels,
        }),
        turn: ice.has_turn(),
        signed: admission.signed(),
        talk: config.audio.playback_device.is_some(),
        vp8: vp8_hub.is_some(),
    };
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(mqtt::INBOUND_QUEUE);
    let snapshot_requests = config
        .homeassistant
        .enabled
        .then(|| Arc::new(tokio::sync::Notify::new()));
    let (link, mqtt_task) = mqtt::start(
        MqttSettings {
            url: broker_url,
            client_id: config
                .signaling
                .client_id
                .clone()
                .unwrap_or_else(|| format!("edgecam-{camera}")),
            credentials,
            ca_file: config.signaling.ca_file.clone(),
            keep_alive: Duration::from_secs(config.signaling.keep_alive_s.into()),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_millis(config.signaling.reconnect_max_ms.into()),
            snapshot_requests: snapshot_requests.clone(),
        },
        topics.clone(),
        &status.build(0, None),
        inbound_tx,
        stops.mqtt.clone(),
    )?;

    let (reports_tx, reports_rx) = mpsc::channel::<PeerReport>(crate::peer::REPORT_QUEUE);
    let talk = config
        .audio
        .playback_device
        .clone()
        .map(|device| Talkback::start(device, tracker, stops.peers.clone()));
    let peers = Peers::new(
        PeerSettings {
            camera: camera.to_string(),
            ice: ice.clone(),
            udp_bind: config.webrtc.udp_bind.clone(),
            tcp_bind: config.webrtc.tcp_bind.clone(),
            ports: PortPool::new(config.webrtc.port_range.bounds()),
            nat_1to1_ip: config.webrtc.nat_1to1_ips.first().map(ToString::to_string),
            nat_1to1_srflx: config.webrtc.nat_1to1_candidate_type == Nat1To1Type::Srflx,
            redact_peer_addr: config.log.redact_peer_addr,
        },
        MediaFeeds {
            video: video_hub.clone(),
            audio: has_audio.then(|| audio_hub.clone()),
            vp8: vp8_hub.clone(),
            ladder: ladder.clone(),
            withheld: withheld.clone(),
            format: format_rx.clone(),
            snapshots: snapshots.clone(),
            talk: talk.clone(),
        },
        reports_tx,
        tracker.clone(),
        stops.peers.clone(),
    );

    let peer_view: Arc<Mutex<stats::PeerView>> = Arc::default();
    // WHEP requests from the HTTP server to the camera loop; each waits for its reply, so
    // a few queued are plenty (more get `503`).
    let (whep_tx, whep_rx) = mpsc::channel::<crate::whep::WhepRequest>(16);
    if let Some(requests) = snapshot_requests {
        let ha = homeassistant::HomeAssistant {
            discovery: crate::homeassistant::Discovery {
                prefix: config.homeassistant.discovery_prefix.clone(),
                topics: topics.clone(),
                name: status.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            link: link.clone(),
            snapshots: snapshots.clone(),
            video: video_hub.clone(),
            audio: audio_hub.clone(),
            peers: peer_view.clone(),
            snapshot_interval: (config.homeassistant.snapshot_interval_s > 0)
                .then(|| Duration::from_secs(config.homeassistant.snapshot_interval_s.into())),
            telemetry_interval: Duration::from_secs(
                config.homeassistant.telemetry_interval_s.into(),
            ),
            requests,
        };
        tracker.spawn(ha.run(stops.mqtt.clone()));
    }
    // Start → first encoded frame of this run, in ms (for /api/stats and the benchmark).
    let first_frame_ms: Arc<std::sync::OnceLock<u64>> = Arc::default();
    if config.http.enabled {
        let sources = Arc::new(stats::Sources {
            peers: peer_view.clone(),
            latency: peers.latency(),
            first_frame: peers.first_frame(),
            refusals: admission.refusals(),
            video_hub: video_hub.clone(),
            audio_hub: audio_hub.clone(),
            capture_state: state_rx.clone(),
            capture_failures,
            rungs_withheld: withheld.clone(),
            rung_sheds: rung_sheds.clone(),
            first_frame_ms: first_frame_ms.clone(),
            snapshots: snapshots.clone(),
            talk: talk.clone(),
            capture_mode: capture_mode.clone(),
            link: link.clone(),
            // Invite mode: every invited viewer may read the stats, so no viewer sees
            // another's session id (a session id is a client id to take over).
            hide_sessions: admission.signed(),
        });
        let stats: web::StatsFn = {
            let sources = sources.clone();
            Arc::new(move || serde_json::to_value(sources.api_stats()).unwrap_or_default())
        };
        let metrics: web::MetricsFn = Arc::new(move || crate::metrics::render(sources.metrics()));
        let page = web::PageConfig {
            broker_url: config.http.broker_ws_url.clone(),
            broker_ws_port: config
                .signaling
                .broker
                .is_none()
                .then_some(config.broker.ws_listen.port()),
            prefix: config.signaling.prefix.clone(),
            camera: camera.to_string(),
            mqtt_version: config.signaling.broker.is_none().then_some(4),
        };
        let snapshot: web::SnapshotFn = {
            let snapshots = snapshots.clone();
            Arc::new(move || {
                let snapshots = snapshots.clone();
                Box::pin(async move {
                    snapshots
                        .take(snapshot::FRESH, snapshot::TIMEOUT)
                        .await
                        .map(|jpeg| jpeg.data)
                        .map_err(|e| e.to_string())
                })
            })
        };
        let router = web::router(
            page,
            web::Endpoints {
                stats,
                metrics,
                snapshot,
                whep: whep_tx,
                refusals: admission.refusals(),
            },
            config.http.web_root.clone(),
            admission.policy(),
        );
        let task = web::serve(config.http.listen, router, stops.http.clone())
            .await
            .with_context(|| format!("http.listen {}", config.http.listen))?;
        tracker.spawn(async move {
            let _ = task.await;
        });
    }

    let machine = Machine::new(
        Limits {
            max_viewers: config.webrtc.max_viewers,
            connect_timeout: Duration::from_secs(config.webrtc.connect_timeout_s.into()),
            config_refresh_after: ice.refresh_after(),
            ..Limits::default()
        },
        Instant::now(),
    );
    let health = Health::new(HealthPolicy {
        // The supervisor acts on a stall first; the watchdog only on a wedged one.
        stall_allowance: Duration::from_millis(config.video.stall_timeout_ms.into())
            + Duration::from_secs(2),
        restart_limit: config.video.restart_limit,
        broker: broker_display,
    });
    if let Some(w) = notifier.watchdog_timeout() {
        log::info!("systemd watchdog on: WatchdogSec={} ms", w.as_millis());
    }
    Ok(Camera {
        started,
        notifier,
        topics,
        tracker: tracker.clone(),
        stops: stops.clone(),
        video_hub,
        format_rx,
        state_rx,
        source_rx,
        admission,
        status,
        inbound_rx,
        whep_rx,
        link,
        mqtt_task,
        reports_rx,
        peers,
        peer_view,
        first_frame_ms,
        machine,
        health,
        ice,
    })
}

/// A started camera: everything [`start`] set up, run by [`Camera::run`].
pub struct Camera {
    started: Instant,
    notifier: Notifier,
    topics: Topics,
    tracker: TaskTracker,
    stops: Stops,
    video_hub: Hub,
    format_rx: watch::Receiver<Option<VideoFormat>>,
    state_rx: watch::Receiver<CaptureState>,
    source_rx: watch::Receiver<String>,
    admission: Admission,
    status: StatusBuilder,
    inbound_rx: mpsc::Receiver<Inbound>,
    whep_rx: mpsc::Receiver<crate::whep::WhepRequest>,
    link: MqttHandle,
    mqtt_task: tokio::task::JoinHandle<()>,
    reports_rx: mpsc::Receiver<PeerReport>,
    peers: Peers,
    peer_view: Arc<Mutex<stats::PeerView>>,
    first_frame_ms: Arc<std::sync::OnceLock<u64>>,
    machine: Machine,
    health: Health,
    ice: IcePolicy,
}

impl Camera {
    /// Runs the camera until `shutdown` is cancelled (process exit or a configuration
    /// reload; the caller sends `STOPPING=1` / `RELOADING=1`), then shuts down
    /// gracefully: every viewer gets `bye` (reason `shutdown`), peer connections close,
    /// the pipeline goes to NULL, the offline status is published, all within
    /// [`SHUTDOWN_DEADLINE`].
    pub async fn run(self, shutdown: CancellationToken) {
        let Camera {
            started,
            notifier,
            topics,
            tracker,
            stops,
            video_hub,
            format_rx,
            state_rx,
            source_rx,
            mut admission,
            status,
            mut inbound_rx,
            mut whep_rx,
            link,
            mqtt_task,
            mut reports_rx,
            mut peers,
            peer_view,
            first_frame_ms,
            mut machine,
            mut health,
            ice,
        } = self;
        let mut format_watch = format_rx.clone();
        let mut capture_watch = state_rx.clone();
        macro_rules! observe_health {
            () => {{
                let verdict = health.observe(
                    Instant::now(),
                    &Observation {
                        capture: &state_rx.borrow(),
                        source: &source_rx.borrow(),
                        video_frames: video_hub.stats().published,
                        broker: &link.state(),
                        signaling_alive: !mqtt_task.is_finished(),
                        embedded_broker_alive: broker::alive(),
                        viewers: machine.viewers(),
                    },
                );
                report_health(&notifier, &verdict, health.status(), started);
            }};
        }
        let mut housekeeping = tokio::time::interval(notifier.check_interval());
        let mut whep = whep::WhepFront::default();
        let mut reserved_log = crate::telemetry::RateLimit::new(Duration::from_secs(10));
        loop {
            let wake = machine.poll_timeout().map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(1),
                tokio::time::Instant::from_std,
            );
            tokio::select! {
                () = shutdown.cancelled() => break,
                msg = inbound_rx.recv() => match msg {
                    Some(Inbound::Message { session, .. }) if crate::whep::is_whep_id(&session) => {
                        // Reserved for WHEP sessions: MQTT cannot reach into one.
                        if let Some(held_back) = reserved_log.check(Instant::now()) {
                            log::warn!(session_id = session.as_str(); "dropping an MQTT message on a session id starting with whep- (reserved){}", crate::telemetry::suppressed(held_back));
                        }
                    }
                    Some(Inbound::Message { session, payload }) => admission.inbound(&mut machine, &link, session, &payload),
                    Some(Inbound::Connected) => log::info!("signaling online as {}", topics.status()),
                    Some(Inbound::Disconnected(why)) => log::warn!("signaling offline ({why}); live sessions keep playing"),
                    None => break,
                },
                Some(req) = whep_rx.recv() => whep.request(req, &mut machine),
                report = reports_rx.recv() => {
                    if let Some(r) = report && peers.is_current(&r.session, r.generation) {
                        machine.handle_peer(Instant::now(), r.session, r.event);
                    }
                },
                () = tokio::time::sleep_until(wake) => machine.handle_timeout(Instant::now()),
                changed = format_watch.changed() => {
                    if changed.is_ok() {
                        // Width/height known now: refresh the retained status.
                        link.publish_status(&status.build(machine.viewers(), format_watch.borrow().as_ref()));
                    }
                },
                changed = capture_watch.changed() => {
                    // Not waiting for the next housekeeping tick: READY=1 (and the status
                    // line) follow the first frame at once instead of up to 1 s later.
                    if changed.is_ok() {
                        let ms = millis(started.elapsed());
                        if *capture_watch.borrow_and_update() == CaptureState::Running
                            && first_frame_ms.set(ms).is_ok()
                        {
                            log::info!("first encoded frame {ms} ms after start");
                        }
                        observe_health!();
                    }
                },
                _ = housekeeping.tick() => {
                    machine.handle_timeout(Instant::now());
                    *peer_view.lock().unwrap_or_else(|p| p.into_inner()) = stats::PeerView {
                        sessions: peers.snapshots(),
                        totals: peers.totals(),
                    };
                    // Petting from this loop is what proves the loop itself is not wedged.
                    observe_health!();
                }
            }
            drain(
                &mut machine,
                &mut peers,
                FrontEnds {
                    link: &link,
                    admission: &mut admission,
                    whep: &mut whep,
                },
                &ice,
                &status,
                &format_rx,
            );
        }

        log::info!("shutting down: {} viewer(s)", machine.viewers());
        notifier.status(&format!(
            "stopping capture, saying bye to {} viewer(s)",
            machine.viewers()
        ));
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        machine.shutdown(Instant::now());
        drain(
            &mut machine,
            &mut peers,
            FrontEnds {
                link: &link,
                admission: &mut admission,
                whep: &mut whep,
            },
            &ice,
            &status,
            &format_rx,
        );
        // Byes are queued in order ahead of the offline status and the disconnect.
        stops.cancel_all();
        // Nobody reads reports any more: a session sending one must not wait for room.
        drop(reports_rx);
        tracker.close();
        let _ = tokio::time::timeout_at(deadline, async {
            tracker.wait().await;
            let _ = mqtt_task.await;
        })
        .await;
        log::info!("stopped");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn report_health(
    notifier: &Notifier,
    verdict: &crate::service::Verdict,
    status_now: &str,
    started: Instant,
) {
    if let Some(status) = &verdict.status {
        log::info!("status: {status}");
    }
    if verdict.ready {
        log::info!(
            "ready: first encoded frame and signaling up {} ms after start",
            started.elapsed().as_millis()
        );
        notifier.ready(status_now);
    } else if let Some(status) = &verdict.status {
        notifier.status(status);
    }
    if verdict.alive {
        notifier.watchdog();
    }
}

/// Where the machine's messages to viewers go: MQTT (sealed in invite mode) or, for
/// WHEP sessions, the waiting HTTP request.
struct FrontEnds<'a> {
    link: &'a MqttHandle,
    admission: &'a mut Admission,
    whep: &'a mut whep::WhepFront,
}

fn drain(
    machine: &mut Machine,
    peers: &mut Peers,
    fronts: FrontEnds<'_>,
    ice: &IcePolicy,
    status: &StatusBuilder,
    format: &watch::Receiver<Option<VideoFormat>>,
) {
    let FrontEnds {
        link,
        admission,
        whep,
    } = fronts;
    while let Some(out) = machine.poll_output() {
        match out {
            Output::Send { session, msg } => {
                if !whep.deliver(&session, &msg, ice) {
                    link.send_payload(&session, admission.seal(&session, &msg));
                }
            }
            Output::SendConfig { session } if whep.owns(&session) => {}
            Output::SendConfig { session } => {
                let config = ice.viewer_config(&session, unix_now());
                link.send_payload(&session, admission.seal(&session, &config));
            }
            Output::Peer(cmd) => {
                let frontend = match &cmd {
                    PeerCommand::Offer { session, .. }
                    | PeerCommand::AddCandidate { session, .. }
                    | PeerCommand::Close { session }
                        if whep.owns(session) =>
                    {
                        Frontend::Whep
                    }
                    _ => Frontend::Mqtt,
                };
                if let PeerCommand::Close { session } = &cmd {
                    admission.session_ended(session);
                    whep.closed(session);
                }
                peers.command_for(cmd, frontend);
            }
            Output::Status { viewers } => {
                link.publish_status(&status.build(viewers, format.borrow().as_ref()));
            }
        }
    }
    whep.settle();
}
