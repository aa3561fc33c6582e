//! HTTP server for the viewer page (`web/`, built into the binary) plus two JSON
//! endpoints, `/config.json` (what the page needs to connect) and `/api/stats`,
//! `/metrics` (Prometheus, OpenMetrics text) and `/snapshot.jpg` (the current picture).
//!
//! In invite mode these endpoints want `Authorization: Bearer <token>` of an invitation
//! (access-v1, "Token"); the page's static files stay public (they hold nothing, and
//! the key arrives in the link's fragment, which no request carries). Every response
//! carries a Content-Security-Policy (scripts, styles and fetches from the page's own
//! origin, MQTT over ws:/wss: anywhere, no workers from elsewhere, no framing) and
//! `X-Content-Type-Options`.

mod page;

use crate::access::gate::AccessPolicy;
use crate::access::refusals::Refusals;
use crate::whep::{Created, WhepError, WhepRequest};
use axum::Router;
use axum::extract::State;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, patch, post};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What `/config.json` tells the page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageConfig {
    /// Broker WebSocket URL, if fixed; otherwise the page uses its own host and
    /// `broker_ws_port`.
    pub broker_url: Option<String>,
    /// Port of the embedded broker's WebSocket listener.
    pub broker_ws_port: Option<u16>,
    /// Topic prefix.
    pub prefix: String,
    /// This camera's id (the page preselects it).
    pub camera: String,
    /// MQTT version the page's broker speaks, when edgecam knows it: `4` (3.1.1) for
    /// the embedded broker, whose WebSocket listener closes an MQTT 5 CONNECT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_version: Option<u8>,
}

/// Produces the `/api/stats` document.
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Produces the `/metrics` text (OpenMetrics, `crate::metrics::render`).
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Produces the current picture as JPEG bytes, or why there is none (a text without
/// secrets, sent to the caller with `503`).
pub type SnapshotFn = Arc<dyn Fn() -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// What the dynamic endpoints serve.
#[derive(Clone)]
pub struct Endpoints {
    /// `/api/stats`.
    pub stats: StatsFn,
    /// `/metrics`.
    pub metrics: MetricsFn,
    /// `/snapshot.jpg`.
    pub snapshot: SnapshotFn,
    /// `/whep` and `/whep/<id>`: the camera loop's WHEP front-end.
    pub whep: mpsc::Sender<WhepRequest>,
    /// Where refused bearer tokens are counted.
    pub refusals: Arc<Refusals>,
}

#[derive(Clone)]
struct AppState {
    page: PageConfig,
    stats: StatsFn,
    metrics: MetricsFn,
    snapshot: SnapshotFn,
    whep: mpsc::Sender<WhepRequest>,
    refusals: Arc<Refusals>,
    /// Invite mode: the policy bearer tokens are checked against.
    access: Option<Arc<AccessPolicy>>,
}

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     media-src 'self' blob:; connect-src 'self' ws: wss:; worker-src 'self'; \
     object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Builds the router: files from `web_root` when given, else the embedded copies;
/// `access` (invite mode) guards the JSON endpoints.
pub fn router(
    page: PageConfig,
    endpoints: Endpoints,
    web_root: Option<PathBuf>,
    access: Option<AccessPolicy>,
) -> Router {
    let Endpoints {
        stats,
        metrics,
        snapshot,
        whep,
        refusals,
    } = endpoints;
    let state = AppState {
        page,
        stats,
        metrics,
        snapshot,
        whep,
        refusals,
        access: access.map(Arc::new),
    };
    let mut whep = Router::new()
        .route("/whep", post(whep_offer))
        .route("/whep/{id}", patch(whep_patch).delete(whep_delete));
    if state.access.is_some() {
        // A WHEP player on another origin (a dashboard, go2rtc's page) may call it,
        // because every request carries a token of its own. Never in open mode: any web
        // page a LAN visitor opens could otherwise pull the camera through their
        // browser.
        whep = whep.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([
                    axum::http::Method::POST,
                    axum::http::Method::PATCH,
                    axum::http::Method::DELETE,
                ])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([header::LOCATION, header::LINK]),
        );
    }
    let mut app = Router::new()
        .route("/config.json", get(config_json))
        .route("/api/stats", get(stats_json))
        .route("/metrics", get(metrics_text))
        .route("/snapshot.jpg", get(snapshot_jpeg))
        .merge(whep)
        // Bodies are SDP: the contract's 64 KiB, not axum's 2 MB default.
        .layer(DefaultBodyLimit::max(crate::whep::MAX_BODY_BYTES));
    match web_root {
        Some(root) => {
            app = app.fallback_service(tower_http::services::ServeDir::new(root));
        }
        None => {
            // In invite mode the config is the token holders' only: the page then reads
            // the invitation, or fetches /config.json with its token.
            let index = match state.access {
                None => page::index_with_config(&state.page),
                Some(_) => page::index_without_config(),
            };
            app = app.merge(page::routes(index));
            app = app.fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() });
        }
    }
    app.with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `None` when the request may proceed; else the 401 to send.
fn unauthorized(s: &AppState, headers: &HeaderMap) -> Option<Response> {
    let policy = s.access.as_ref()?;
    let now = crate::ice::unix_now();
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| policy.admits_bearer(t.trim(), now));
    (!ok).then(|| {
        s.refusals.count("http", "no valid bearer token");
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "an invitation's token is needed (docs/security.md)",
        )
            .into_response()
    })
}

async fn config_json(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    Json(s.page).into_response()
}

async fn stats_json(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    Json((s.stats)()).into_response()
}

async fn metrics_text(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        (s.metrics)(),
    )
        .into_response()
}

async fn snapshot_jpeg(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    match (s.snapshot)().await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                // Each request is the picture of its moment.
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg,
        )
            .into_response(),
        Err(why) => {
            log::info!("snapshot request not served: {why}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                why,
            )
                .into_response()
        }
    }
}

/// How long a WHEP request may wait for the camera loop (an answer includes ICE
/// gathering, which TURN may stretch to a few seconds).
const WHEP_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn whep_status(e: &WhepError) -> StatusCode {
    match e {
        WhepError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhepError::BadOffer(_) | WhepError::BadFragment(_) => StatusCode::BAD_REQUEST,
        WhepError::NotFound => StatusCode::NOT_FOUND,
        WhepError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        WhepError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn whep_refusal(e: &WhepError) -> Response {
    log::info!("WHEP request refused: {e}");
    let mut r = (whep_status(e), e.to_string()).into_response();
    if matches!(e, WhepError::Busy(_)) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}

/// Hands `make(reply)` to the camera loop and waits for its reply.
async fn ask_camera<T>(
    s: &AppState,
    make: impl FnOnce(oneshot::Sender<Result<T, WhepError>>) -> WhepRequest,
) -> Result<T, WhepError> {
    let (tx, rx) = oneshot::channel();
    s.whep
        .try_send(make(tx))
        .map_err(|_| WhepError::Busy("the camera has too many WHEP requests queued".into()))?;
    match tokio::time::timeout(WHEP_WAIT, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(WhepError::Internal("the session ended".into())),
        Err(_) => Err(WhepError::Internal("no answer in time".into())),
    }
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// `POST /whep` (draft-ietf-wish-whep §4.2; RFC 9725 §4.2): an SDP offer in,
/// `201 Created` with the answer, `Location` and ICE servers as `Link` headers out.
async fn whep_offer(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    if !content_type_is(&headers, "application/sdp") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be Content-Type: application/sdp",
        )
            .into_response();
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return whep_refusal(&WhepError::BadOffer("not UTF-8".into()));
    };
    match ask_camera(&s, |reply| WhepRequest::Offer { sdp, reply }).await {
        Ok(Created {
            id,
            answer,
            ice_servers,
        }) => {
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("/whep/{id}")) {
                h.insert(header::LOCATION, v);
            }
            for link in crate::whep::ice_server_links(&ice_servers) {
                if let Ok(v) = HeaderValue::from_str(&link) {
                    h.append(header::LINK, v);
                }
            }
            r
        }
        Err(e) => whep_refusal(&e),
    }
}

/// `PATCH /whep/<id>` with `application/trickle-ice-sdpfrag` (RFC 9725 §4.3): the
/// caller's trickled candidates; `204`, or `422` for an ICE restart.
async fn whep_patch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    let Ok(id) = crate::signaling::protocol::Id::parse(&id) else {
        return whep_refusal(&WhepError::NotFound);
    };
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH wants Content-Type: application/trickle-ice-sdpfrag",
        )
            .into_response();
    }
    let fragment = match std::str::from_utf8(&body)
        .map_err(|_| WhepError::BadFragment("not UTF-8".into()))
        .and_then(crate::whep::parse_sdpfrag)
    {
        Ok(f) => f,
        Err(e) => return whep_refusal(&e),
    };
    match ask_camera(&s, |reply| WhepRequest::Patch {
        id,
        fragment,
        reply,
    })
    .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => whep_refusal(&e),
    }
}

/// `DELETE /whep/<id>` (RFC 9725 §4.2): ends the session; `200`, or `404`.
async fn whep_delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    let Ok(id) = crate::signaling::protocol::Id::parse(&id) else {
        return whep_refusal(&WhepError::NotFound);
    };
    match ask_camera(&s, |reply| WhepRequest::Delete { id, reply }).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => whep_refusal(&e),
    }
}

/// Binds `addr` and serves until `shutdown`.
///
/// # Errors
/// The bind error.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    log::info!("viewer page on http://{}", listener.local_addr()?);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            log::error!("HTTP server stopped: {e}");
        }
    }))
}
