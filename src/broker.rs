//! The embedded MQTT broker of standalone mode (`rumqttd`): MQTT over TCP for the
//! camera's own client, MQTT over WebSocket for browsers. Started only when
//! `signaling.broker` is unset.

use crate::config::BrokerConfig;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

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

/// The settings the running embedded broker was started with (it cannot be stopped).
static RUNNING: Mutex<Option<BrokerConfig>> = Mutex::new(None);

/// Checks that [`start`] with `cfg` would succeed without starting anything: a running
/// broker is reused whatever `cfg` says; otherwise both listen addresses must be free.
///
/// # Errors
/// [`BrokerError::Listen`] naming the address that cannot be bound.
pub fn check(cfg: &BrokerConfig) -> Result<(), BrokerError> {
    if RUNNING.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
        return Ok(());
    }
    check_free(cfg.listen)?;
    check_free(cfg.ws_listen)
}

/// Starts the broker on a thread of its own (rumqttd runs its own runtime). It lives
/// as long as the process: a second call (a configuration reload) keeps the running
/// broker, warning when its settings changed, since those apply only after a restart.
/// Returns the MQTT/TCP address the broker listens on.
///
/// # Errors
/// [`BrokerError`] when a listener address is unavailable.
pub fn start(cfg: &BrokerConfig) -> Result<SocketAddr, BrokerError> {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(current) = running.as_ref() {
        if current != cfg {
            log::warn!("embedded broker settings changed: they apply after a restart");
        }
        return Ok(current.listen);
    }
    check_free(cfg.listen)?;
    check_free(cfg.ws_listen)?;
    let auth = match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => Some(HashMap::from([(u.clone(), p.clone())])),
        _ => None,
    };
    let connections = ConnectionSettings {
        connection_timeout_ms: 30_000,
        max_payload_size: 1024 * 1024,
        max_inflight_count: 200,
        auth,
        external_auth: None,
        dynamic_filters: true,
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
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
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
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Thread)?;
    wait_listening(cfg.listen);
    log::info!(
        "embedded MQTT broker on tcp {} and websocket {}",
        cfg.listen,
        cfg.ws_listen
    );
    *running = Some(cfg.clone());
    Ok(cfg.listen)
}
