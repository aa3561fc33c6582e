//! The embedded MQTT broker of standalone mode (`rumqttd`): MQTT over TCP for the
//! camera's own client, MQTT over WebSocket for browsers. Started only when
//! `signaling.broker` is unset.

mod retained;

use crate::access::gate::AccessPolicy;
use crate::config::BrokerConfig;
use base64::Engine as _;
use rumqttd::{AuthHandler, Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq as _;

/// Largest MQTT packet the embedded broker reads (its remaining length), bytes: the
/// contract's 64 KiB payload limit (signaling-v1, "Messages") plus room for the topic
/// and MQTT 5 properties. A larger packet closes its connection before its body is
/// read, so nobody can make the broker buffer a 1 MiB payload.
pub const MAX_PACKET_BYTES: usize = crate::signaling::protocol::MAX_PAYLOAD_BYTES + 4 * 1024;

/// Size at which a topic filter's in-memory log (rumqttd's commit log) starts a new
/// segment, bytes.
const SEGMENT_BYTES: usize = 256 * 1024;

/// Segments each topic filter's log keeps: the oldest is dropped when a new one starts
/// (a subscriber that far behind skips ahead). One filter's log thus holds at most
/// about `SEGMENTS × (SEGMENT_BYTES + MAX_PACKET_BYTES)`, ~650 KiB, where rumqttd's
/// default kept up to 1 GiB. Signaling traffic of one filter is a few KiB a second.
const SEGMENTS: usize = 2;

/// Connections the embedded broker holds at once: every open page holds one, the
/// camera one, and a viewer limit is at most 1000.
const MAX_CONNECTIONS: usize = 1024;

/// Packets queued from the router to one connection before rumqttd stops reading
/// for it; a viewer's session has a few dozen messages in flight at most.
const MAX_QUEUED_PACKETS: usize = 64;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The broker thread could not be spawned.
    #[error("cannot start broker thread: {0}")]
    Thread(std::io::Error),
    /// A reload asked for another admission mode than the running broker's.
    #[error(
        "the embedded broker runs in {running} mode; restart the service to change [access] mode"
    )]
    ModeChanged {
        /// `open` or `invite`.
        running: &'static str,
    },
    /// The system random source failed (the camera's own login).
    #[error("cannot generate the camera's broker login: system random source failed")]
    Random,
}

/// Whom the embedded broker admits.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Anyone, or only `[broker] username`/`password` when set.
    Open,
    /// The camera's own client (a login made up at start) and invited viewers: user
    /// name = viewer name, password = its token (access-v1, "Token"); also the
    /// `[broker]` login when set.
    Invite(AccessPolicy),
}

impl Admission {
    fn mode(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Invite(_) => "invite",
        }
    }
}

/// The started (or running) broker.
#[derive(Debug, Clone)]
pub struct Started {
    /// The MQTT/TCP listen address.
    pub listen: SocketAddr,
    /// The login the camera's own client must use (invite mode).
    pub camera_login: Option<(String, String)>,
}

/// What a running broker needs to admit clients; the policy is replaced on reload
/// (revocations apply at once).
struct Running {
    cfg: BrokerConfig,
    mode: &'static str,
    camera_login: Option<(String, String)>,
    policy: Arc<RwLock<Option<AccessPolicy>>>,
    /// The one topic whose retained message the sweeper keeps: the camera's status.
    status_topic: Arc<RwLock<String>>,
}

/// The external-auth check of invite mode (rumqttd calls it for every CONNECT).
fn admits(
    policy: &RwLock<Option<AccessPolicy>>,
    camera: &(String, String),
    configured: Option<&(String, String)>,
    user: &str,
    pass: &str,
) -> bool {
    let eq = |a: &str, b: &str| bool::from(a.as_bytes().ct_eq(b.as_bytes()));
    if (eq(user, &camera.0) && eq(pass, &camera.1))
        || configured.is_some_and(|(u, p)| eq(user, u) && eq(pass, p))
    {
        return true;
    }
    let now = crate::ice::unix_now();
    policy
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|p| p.admits_token(user, pass, now))
}

fn check_free(addr: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd binds inside its own threads and only logs a failure there; binding once
    // here turns a taken port into a clear start-up error.
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| BrokerError::Listen { addr, source })
}

/// Waits (at most 3 s) until the broker accepts TCP connections, so the camera's own
/// client does not start with a refused connection and a backoff delay.
fn wait_listening(addr: SocketAddr) {
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    for _ in 0..150 {
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(100))
            .is_ok()
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    log::warn!("embedded broker not accepting on {addr} after 3 s");
}

/// Set when the embedded broker's thread has ended (returned, or panicked).
static ENDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the broker ended when dropped: at the end of its thread, panic or not.
struct EndGuard;

impl Drop for EndGuard {
    fn drop(&mut self) {
        mark_ended();
    }
}

/// Records that the embedded broker no longer works (its thread or its router ended).
fn mark_ended() {
    ENDED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether the embedded broker is still running; `true` when none was started (an
/// external broker). rumqttd's threads cannot be restarted in-process, so a `false`
/// here is for the health check: edgecam stops petting the watchdog and systemd
/// restarts it.
pub fn alive() -> bool {
    !ENDED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The running embedded broker (it cannot be stopped).
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// Checks that [`start`] with `cfg` would succeed without starting anything: a running
/// broker is reused whatever `cfg` says; otherwise both listen addresses must be free.
///
/// # Errors
/// [`BrokerError::Listen`] naming the address that cannot be bound.
pub fn check(cfg: &BrokerConfig, invite: bool) -> Result<(), BrokerError> {
    let wanted = if invite { "invite" } else { "open" };
    if let Some(running) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        if running.mode != wanted {
            return Err(BrokerError::ModeChanged {
                running: running.mode,
            });
        }
        return Ok(());
    }
    check_free(cfg.listen)?;
    check_free(cfg.ws_listen)
}

/// Starts the broker on a thread of its own (rumqttd runs its own runtime). It lives
/// as long as the process: a second call (a configuration reload) keeps the running
/// broker, warning when its settings changed, since those apply only after a restart;
/// a new invite policy (revocations) applies at once, a change of mode is refused.
///
/// # Errors
/// [`BrokerError`] when a listener address is unavailable, the mode changed, or the
/// camera's login cannot be generated.
pub fn start(
    cfg: &BrokerConfig,
    admission: Admission,
    status_topic: &str,
) -> Result<Started, BrokerError> {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(current) = running.as_ref() {
        if current.mode != admission.mode() {
            return Err(BrokerError::ModeChanged {
                running: current.mode,
            });
        }
        *current
            .status_topic
            .write()
            .unwrap_or_else(|p| p.into_inner()) = status_topic.to_owned();
        if current.cfg != *cfg {
            log::warn!("embedded broker settings changed: they apply after a restart");
        }
        if let Admission::Invite(policy) = admission {
            *current.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(policy);
        }
        return Ok(Started {
            listen: current.cfg.listen,
            camera_login: current.camera_login.clone(),
        });
    }
    check_free(cfg.listen)?;
    check_free(cfg.ws_listen)?;
    let configured = match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    let mode = admission.mode();
    let policy = Arc::new(RwLock::new(None));
    let (auth, external_auth, camera_login): (_, Option<AuthHandler>, _) = match admission {
        Admission::Open => (
            configured.clone().map(|(u, p)| HashMap::from([(u, p)])),
            None,
            None,
        ),
        Admission::Invite(p) => {
            *policy.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
            let mut bytes = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| BrokerError::Random)?;
            let login = (
                "edgecam-camera".to_owned(),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            );
            let (policy, camera) = (policy.clone(), login.clone());
            let handler: AuthHandler = Arc::new(move |_client, user, pass| {
                let ok = admits(&policy, &camera, configured.as_ref(), &user, &pass);
                Box::pin(async move { ok })
            });
            (None, Some(handler), Some(login))
        }
    };
    let connections = ConnectionSettings {
        connection_timeout_ms: 30_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: MAX_QUEUED_PACKETS,
        auth,
        external_auth,
        // A publish nobody subscribed to must not create a topic filter (and its log)
        // that is never freed.
        dynamic_filters: false,
    };
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: MAX_QUEUED_PACKETS as u64,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: SEGMENTS,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([(
            "tcp".to_owned(),
            server("tcp", cfg.listen),
        )])),
        v5: None,
        ws: Some(HashMap::from([(
            "ws".to_owned(),
            server("ws", cfg.ws_listen),
        )])),
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let keep = Arc::new(RwLock::new(status_topic.to_owned()));
    let sweeper_keep = keep.clone();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let _ended = EndGuard;
            let mut broker = Broker::new(config);
            if let Err(e) = retained::spawn(&broker, sweeper_keep, MAX_QUEUED_PACKETS) {
                log::error!("embedded broker: no retained-message sweeper: {e}");
            }
            match broker.start() {
                Err(e) => log::error!("embedded broker stopped: {e}"),
                Ok(()) => log::error!("embedded broker stopped"),
            }
        })
        .map_err(BrokerError::Thread)?;
    wait_listening(cfg.listen);
    log::info!(
        "embedded MQTT broker on tcp {} and websocket {} ({})",
        cfg.listen,
        cfg.ws_listen,
        match mode {
            "invite" => "admits the camera and invited viewers",
            _ if cfg.username.is_some() => "admits the configured login",
            _ => "admits anyone",
        }
    );
    *running = Some(Running {
        cfg: cfg.clone(),
        mode,
        camera_login: camera_login.clone(),
        policy,
        status_topic: keep,
    });
    Ok(Started {
        listen: cfg.listen,
        camera_login,
    })
}
