//! The viewer page's files (`web/`, built into the binary): `/`, `/index.html` and the
//! scripts and style sheet the page loads.
//!
//! A returning viewer should not wait for what their browser already has. Every file
//! carries a weak validator (`ETag: W/"<first 64 bits of its SHA-256, hex>"`, RFC 9110
//! §8.8.3) and `Cache-Control: no-cache` (RFC 9111 §5.2.2.4: stored, but revalidated
//! before each use), so a browser's next visit gets `304 Not Modified` (RFC 9110 §15.4.5)
//! for each file it holds, keeps the code it compiled from them (V8's code cache), and
//! still sees a new edgecam's page at once. Bodies go gzip-compressed to browsers that
//! accept it (`tower_http::compression`; the page's 75 KB of scripts are ~26 KB on the
//! wire), which counts on a viewer's slow link.

use super::PageConfig;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::Bytes;
use headers::{ETag, HeaderMapExt, IfNoneMatch};

/// The meta tag of `web/index.html` that `web/boot.js` reads the page's config from.
const CONFIG_META: &str = r#"<meta name="edgecam-config" content="">"#;

/// `html` with `page` (what `/config.json` says) in its `edgecam-config` meta tag, so
/// the page opens its broker connection without a round trip first (`web/boot.js`).
/// The JSON is escaped for a double-quoted attribute (HTML, "Attributes": `&`, `"`,
/// `<`, `>`, `'`). A page without the tag is returned as it is.
pub fn page_with_config(html: &str, page: &PageConfig) -> String {
    let json = serde_json::to_string(page).unwrap_or_default();
    let mut escaped = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    html.replacen(
        CONFIG_META,
        &format!(r#"<meta name="edgecam-config" content="{escaped}">"#),
        1,
    )
}

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/boot.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/boot.js"),
    ),
    (
        "/viewer.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/viewer.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/broker.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/broker.js"),
    ),
    (
        "/vendor/u8-mqtt.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/u8-mqtt.js"),
    ),
    (
        "/vendor/noble-hashes.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/noble-hashes.js"),
    ),
];

/// The viewer page (`/`, `/index.html`).
const INDEX_HTML: &str = include_str!("../../web/index.html");

/// The page's routes: `index` (the page, with or without its config) at `/` and
/// `/index.html`, and each embedded file at its path; gzip-compressed when the request
/// accepts it.
pub fn routes<S: Clone + Send + Sync + 'static>(index: Bytes) -> Router<S> {
    let mut page = Router::new();
    for (path, mime, body) in FILES {
        page = page.route(path, file(mime, Bytes::from_static(body)));
    }
    let html = file("text/html; charset=utf-8", index);
    page.route("/", html.clone())
        .route("/index.html", html)
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

/// The page's HTML in open mode: `INDEX_HTML` with `page` in its meta tag.
pub fn index_with_config(page: &PageConfig) -> Bytes {
    Bytes::from(page_with_config(INDEX_HTML, page))
}

/// The page's HTML in invite mode: without a config (that is the token holders' only).
pub fn index_without_config() -> Bytes {
    Bytes::from_static(INDEX_HTML.as_bytes())
}

/// `GET` (and `HEAD`) of one file: `304` when the request's `If-None-Match` names its
/// validator (weak comparison, RFC 9110 §13.1.2), else the body as `mime`.
fn file<S: Clone + Send + Sync + 'static>(mime: &'static str, body: Bytes) -> MethodRouter<S> {
    let etag = validator(&body);
    get(move |request: HeaderMap| async move {
        let held = request
            .typed_get::<IfNoneMatch>()
            .is_some_and(|held| !held.precondition_passes(&etag));
        let mut response: Response = if held {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, mime)], body).into_response()
        };
        let h = response.headers_mut();
        h.typed_insert(etag);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    })
}

/// `W/"<16 hex digits>"`: the first 64 bits of `body`'s SHA-256. Weak, because the same
/// tag names the identity and the gzip representation (RFC 9110 §8.8.3.3).
fn validator(body: &[u8]) -> ETag {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("W/\"{hex}\"")
        .parse()
        .unwrap_or_else(|_| unreachable!("hex digits in quotes are an entity tag"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn page(broker_url: Option<&str>) -> PageConfig {
        PageConfig {
            broker_url: broker_url.map(str::to_owned),
            broker_ws_port: Some(9001),
            prefix: "edgecam".into(),
            camera: "cam1".into(),
            mqtt_version: Some(4),
        }
    }

    #[test]
    fn the_page_carries_its_config_in_the_meta_tag() {
        let html = page_with_config(INDEX_HTML, &page(None));
        assert!(!html.contains(CONFIG_META), "the empty tag is filled");
        assert!(
            html.contains(
                r#"<meta name="edgecam-config" content="{&quot;brokerUrl&quot;:null,&quot;brokerWsPort&quot;:9001,&quot;prefix&quot;:&quot;edgecam&quot;,&quot;camera&quot;:&quot;cam1&quot;,&quot;mqttVersion&quot;:4}">"#
            ),
            "{html}"
        );
    }

    #[test]
    fn a_broker_url_cannot_leave_the_attribute() {
        let html = page_with_config(
            INDEX_HTML,
            &page(Some(r#"wss://h/x?a=1&b="><script>alert(1)</script>'"#)),
        );
        let start = html.find(r#"name="edgecam-config" content=""#).unwrap();
        let tag = &html[start..html[start..].find('>').unwrap() + start];
        assert!(
            !tag.contains('<') && !tag.contains('\'') && tag.matches('"').count() == 4,
            "{tag}"
        );
        assert!(
            tag.contains("a=1&amp;b=\\&quot;&gt;&lt;script&gt;"),
            "{tag}"
        );
    }

    #[test]
    fn a_page_without_the_tag_is_served_as_it_is() {
        assert_eq!(page_with_config("<p>hi</p>", &page(None)), "<p>hi</p>");
    }

    async fn fetch(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        routes::<()>(index_with_config(&page(None)))
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_held_file_is_not_sent_again_and_a_changed_one_is() {
        let first = fetch("/vendor/u8-mqtt.js", &[]).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with("W/\"") && etag.len() == 20, "{etag}");

        let again = fetch("/vendor/u8-mqtt.js", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
        let body = axum::body::to_bytes(again.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());

        // A strong tag with the same opaque part matches too (weak comparison); a list
        // that names it among others as well; another file's tag does not.
        let strong = etag.trim_start_matches("W/");
        let listed = format!("\"0000000000000000\", {strong}");
        for held in [strong, listed.as_str()] {
            let r = fetch("/vendor/u8-mqtt.js", &[("if-none-match", held)]).await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{held}");
        }
        let other = fetch("/viewer.js", &[("if-none-match", &etag)]).await;
        assert_eq!(other.status(), StatusCode::OK);
        assert_ne!(other.headers()[header::ETAG], etag.as_str());
        let garbage = fetch("/viewer.js", &[("if-none-match", "not a tag")]).await;
        assert_eq!(garbage.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn files_go_compressed_to_browsers_that_accept_gzip() {
        let plain = fetch("/vendor/u8-mqtt.js", &[]).await;
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let plain = axum::body::to_bytes(plain.into_body(), 1 << 20)
            .await
            .unwrap();
        let gz = fetch("/vendor/u8-mqtt.js", &[("accept-encoding", "gzip")]).await;
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(
            gz.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let gz = axum::body::to_bytes(gz.into_body(), 1 << 20).await.unwrap();
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated)
            .expect("gzip");
        assert!(inflated == plain, "the same bytes");
        assert!(
            gz.len() * 2 < plain.len(),
            "{} bytes compressed of {}",
            gz.len(),
            plain.len()
        );
        let index = fetch("/", &[("accept-encoding", "gzip")]).await;
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[header::CONTENT_ENCODING], "gzip");
    }
}
