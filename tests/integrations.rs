//! The endpoints that fit edgecam into other tools, each on a real camera:
//! - `GET /metrics` with a real viewer: the OpenMetrics text parses with a Prometheus
//!   text-format parser nobody here wrote (`prometheus-parse`), and the figures follow
//!   what happened (a viewer joins, plays and leaves);
//! - `GET /snapshot.jpg`: a JPEG that a decoder nobody here wrote (`jpeg-decoder`)
//!   decodes at the stream's size, from a branch that encodes nothing while idle;
//! - the `control` data channel, from a real webrtc-rs viewer: each command and its
//!   reply, refusals, and a flood held to its budget while the video plays on;
//! - Home Assistant MQTT discovery on a real Mosquitto: every config message checked
//!   against the keys and values Home Assistant documents, its templates evaluated on
//!   the payloads they read, the camera entity's JPEG, a snapshot on request, and the
//!   Last Will turning the entities unavailable;
//! - WHEP: GStreamer's `whepsrc` (gst-plugins-rs, built from crates.io by
//!   `scripts/whep-client.sh`) decodes H.264 and Opus from the camera beside an MQTT
//!   viewer, within the same viewer limit; bearer tokens, `PATCH` and `DELETE`.

mod common;

use common::viewer::{Viewer, online_camera_from, wait_status};
use common::{Edgecam, Mosquitto, camera_config, free_port};
use prometheus_parse::{Scrape, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `GET http://127.0.0.1:{port}{path}`: status, headers (names lower-cased) and body.
fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    // The later --max-time wins: 5 s, as for a scrape.
    curl(&["--max-time", "5", &format!("http://127.0.0.1:{port}{path}")])
}

/// A camera online on a fresh broker, its HTTP server on `127.0.0.1:<port>`; the port.
async fn camera_with_http() -> (u16, common::Mosquitto, Edgecam) {
    let http = free_port();
    let (broker, cam) = online_camera_from("cam", |port| {
        camera_config("cam", port, "").replace(
            "[http]\nenabled = false",
            &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
        )
    })
    .await;
    (http, broker, cam)
}

/// Decodes a JPEG with a decoder nobody here wrote: (width, height, RGB pixels).
fn decode_jpeg(jpeg: &[u8]) -> (u16, u16, Vec<u8>) {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    let pixels = decoder.decode().expect("a JPEG that decodes");
    let info = decoder.info().expect("JPEG info");
    (info.width, info.height, pixels)
}

fn scrape(port: u16) -> Scrape {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "-"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample named `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(b) => b.last().map(|c| c.count),
            Value::Summary(_) => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_viewer_joining_playing_and_leaving() {
    let (http, broker, _cam) = camera_with_http().await;
    // "online" in the status does not wait for capture's first frame: give it 10 s.
    let mut idle = scrape(http);
    for _ in 0..50 {
        if value(&idle, "edgecam_capture_running", &[]) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        idle = scrape(http);
    }
    assert_eq!(value(&idle, "edgecam_mqtt_connected", &[]), Some(1.0));
    assert_eq!(value(&idle, "edgecam_mqtt_connects_total", &[]), Some(1.0));
    assert_eq!(value(&idle, "edgecam_capture_running", &[]), Some(1.0));
    assert_eq!(
        value(&idle, "edgecam_video_frames_sent_total", &[]),
        Some(0.0)
    );

    let viewer = Viewer::connect(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 30)
        .await;
    assert!(ok, "plays: {r:?}");
    // The camera loop refreshes its session view once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let live = scrape(http);
    // One session, over a host candidate of the camera's; the viewer's side may be
    // `host` or not yet known (`?`, peer-reflexive) depending on which arrived first,
    // its trickled candidate or its first check.
    let viewers: Vec<_> = live
        .samples
        .iter()
        .filter(|x| x.metric == "edgecam_viewers")
        .collect();
    assert_eq!(viewers.len(), 1, "{viewers:?}");
    assert_eq!(viewers[0].labels.get("frontend"), Some("mqtt"));
    assert!(
        viewers[0]
            .labels
            .get("candidate_pair")
            .is_some_and(|p| p.starts_with("host/") && p.ends_with(" udp")),
        "{viewers:?}"
    );
    assert!(
        matches!(viewers[0].value, Value::Gauge(v) if v == 1.0),
        "{viewers:?}"
    );
    let sent = value(&live, "edgecam_video_frames_sent_total", &[]).unwrap_or(0.0);
    assert!(sent >= 30.0, "frames sent {sent}");
    assert!(value(&live, "edgecam_sent_bytes_total", &[]).unwrap_or(0.0) > 10_000.0);
    let encoded = value(&live, "edgecam_video_frames_encoded_total", &[]).unwrap_or(0.0);
    assert!(encoded >= sent, "encoded {encoded} < sent {sent}");
    let latency = live
        .samples
        .iter()
        .find(|x| x.metric == "edgecam_capture_to_rtp_latency_seconds")
        .expect("the latency histogram");
    match &latency.value {
        Value::Histogram(buckets) => {
            let total = buckets.last().map_or(0.0, |c| c.count);
            assert!(total >= 30.0, "{buckets:?}");
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative: {buckets:?}"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // One session, one time to first frame, under the 10 s the histogram spans.
    let ttff = live
        .samples
        .iter()
        .find(|x| x.metric == "edgecam_time_to_first_frame_seconds")
        .expect("the time-to-first-frame histogram");
    match &ttff.value {
        Value::Histogram(buckets) => {
            assert_eq!(buckets.last().map(|c| c.count), Some(1.0), "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }

    viewer.bye().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(http);
    assert!(
        !after.samples.iter().any(|x| x.metric == "edgecam_viewers"),
        "no open session"
    );
    assert!(
        value(&after, "edgecam_video_frames_sent_total", &[]).unwrap_or(0.0) >= sent,
        "a counter keeps what ended sessions sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_current_picture_and_costs_nothing_while_idle() {
    let (http, _broker, _cam) = camera_with_http().await;
    // Open mode: no CORS on WHEP, or any page a LAN visitor opens could pull the camera.
    let (_, head) = curl_status(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Access-Control-Request-Method: POST",
        &format!("http://127.0.0.1:{http}/whep"),
    ]);
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let encoded = |s: &Scrape| value(s, "edgecam_snapshots_encoded_total", &[]).unwrap_or(-1.0);
    // Idle: the branch has encoded nothing.
    assert_eq!(encoded(&scrape(http)), 0.0);

    let started = std::time::Instant::now();
    let (status, head, jpeg) = get(http, "/snapshot.jpg");
    let took = started.elapsed();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: image/jpeg"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let (width, height, pixels) = decode_jpeg(&jpeg);
    assert_eq!((width, height), (640, 360), "the stream's size");
    assert_eq!(pixels.len(), 640 * 360 * 3);
    // Not a blank picture: the SMPTE bars span many grey levels.
    let levels: std::collections::BTreeSet<u8> = pixels.iter().step_by(97).copied().collect();
    assert!(levels.len() > 20, "{} distinct levels", levels.len());
    println!(
        "snapshot: {} bytes, {}x{}, {} ms (curl, debug build)",
        jpeg.len(),
        width,
        height,
        took.as_millis()
    );

    // Served once, the branch closes again: nothing more is encoded while idle.
    let after_one = encoded(&scrape(http));
    assert!((1.0..=3.0).contains(&after_one), "{after_one}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(encoded(&scrape(http)), after_one, "the branch is closed");

    // A second snapshot, past the 200 ms freshness bound, is a new picture.
    let (status, _, second) = get(http, "/snapshot.jpg");
    assert_eq!(status, 200);
    assert_ne!(second, jpeg, "the moving pattern changed");
    let s = scrape(http);
    assert!(encoded(&s) > after_one);
    assert_eq!(value(&s, "edgecam_snapshots_served_total", &[]), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_channel_answers_each_command_and_holds_a_flood_to_its_budget() {
    let (broker, _cam) = online_camera_from("cam", |port| camera_config("cam", port, "")).await;
    let viewer = Viewer::connect_with_control(broker.port, "cam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "plays: {r:?}");

    let stats = viewer.control(r#"{"id":1,"cmd":"stats"}"#).await.reply;
    assert_eq!(stats["id"], 1);
    assert_eq!(stats["ok"], true, "{stats}");
    assert!(
        stats["stats"]["videoFrames"].as_u64().unwrap_or(0) >= 10,
        "{stats}"
    );

    let started = std::time::Instant::now();
    let snap = viewer.control(r#"{"id":"s","cmd":"snapshot"}"#).await;
    let took = started.elapsed();
    assert_eq!(snap.reply["ok"], true, "{}", snap.reply);
    assert_eq!(snap.reply["type"], "image/jpeg");
    assert_eq!(
        snap.reply["bytes"].as_u64(),
        Some(snap.payload.len() as u64),
        "every announced chunk arrived"
    );
    let (width, height, _) = decode_jpeg(&snap.payload);
    assert_eq!((width, height), (640, 360));
    println!(
        "data channel snapshot: {} bytes in {} chunks, {} ms",
        snap.payload.len(),
        snap.reply["chunks"],
        took.as_millis()
    );

    let before = viewer.report().keyframes;
    let kf = viewer.control(r#"{"id":3,"cmd":"keyframe"}"#).await.reply;
    assert_eq!(kf["ok"], true, "{kf}");
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(3), |r| r.keyframes > before)
        .await;
    assert!(ok, "an IDR follows the request: {r:?}");

    let ptz = viewer
        .control(r#"{"id":4,"cmd":"ptz","pan":5}"#)
        .await
        .reply;
    assert_eq!(
        (ptz["ok"].clone(), ptz["error"].clone()),
        (false.into(), "unsupported".into())
    );
    let unknown = viewer.control(r#"{"id":5,"cmd":"reboot"}"#).await.reply;
    assert_eq!(unknown["error"], "unknown-command", "{unknown}");
    let junk = viewer.control("{not json").await.reply;
    assert_eq!(junk["error"], "bad-request", "{junk}");

    // A flood: once the budget is spent one `rate-limited` reply comes, then silence.
    // The first reply that is not `ok` must say so.
    let mut refused = None;
    for i in 0..20 {
        let reply = viewer
            .control(&format!(r#"{{"id":{},"cmd":"stats"}}"#, 100 + i))
            .await
            .reply;
        if reply["ok"] == false {
            refused = Some((i, reply));
            break;
        }
    }
    let (after, reply) = refused.expect("the budget runs out within 20 requests");
    assert_eq!(reply["error"], "rate-limited", "{reply}");
    assert!(after >= 1, "some requests were within budget");
    // (The silence after it is timing-bound, so `peer::control`'s unit tests check it
    // in simulated time.)
    // The video plays on meanwhile.
    let frames = viewer.report().decoded_video;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(3), |r| r.decoded_video >= frames + 15)
        .await;
    assert!(ok, "video keeps playing: {r:?}");
    // With the budget refilled, commands run again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = viewer.control(r#"{"id":9,"cmd":"stats"}"#).await.reply;
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["id"], 9, "{again}");
    viewer.bye().await;
}

/// Keys Home Assistant documents for MQTT entities of every kind
/// (<https://www.home-assistant.io/integrations/mqtt/>, "MQTT Discovery" and each
/// platform's "Configuration Variables").
const HA_COMMON_KEYS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "default_entity_id",
    "device",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "platform",
    "qos",
    "unique_id",
];

/// Per platform: (required keys, further documented keys).
fn ha_platform_keys(component: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match component {
        // https://www.home-assistant.io/integrations/camera.mqtt/
        "camera" => (&["topic"], &["image_encoding"]),
        // https://www.home-assistant.io/integrations/sensor.mqtt/
        "sensor" => (
            &["state_topic"],
            &[
                "device_class",
                "expire_after",
                "force_update",
                "last_reset_value_template",
                "options",
                "state_class",
                "suggested_display_precision",
                "unit_of_measurement",
                "value_template",
            ],
        ),
        // https://www.home-assistant.io/integrations/binary_sensor.mqtt/
        "binary_sensor" => (
            &["state_topic"],
            &[
                "device_class",
                "expire_after",
                "force_update",
                "off_delay",
                "payload_off",
                "payload_on",
                "value_template",
            ],
        ),
        other => panic!("a component edgecam does not publish: {other}"),
    }
}

/// Evaluates the templates edgecam uses (`{{ value_json.KEY }}`, optionally with
/// `| default(N)`) on a JSON payload, as Home Assistant would.
fn render(template: &str, payload: &[u8]) -> Option<String> {
    let inner = template.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let (path, default) = match inner.split_once('|') {
        Some((p, f)) => (
            p.trim(),
            f.trim()
                .strip_prefix("default(")
                .and_then(|d| d.strip_suffix(')')),
        ),
        None => (inner, None),
    };
    let key = path.strip_prefix("value_json.")?;
    let json: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match (&json[key], default) {
        (serde_json::Value::Null, Some(d)) => Some(d.to_owned()),
        (serde_json::Value::Null, None) => None,
        (serde_json::Value::String(s), _) => Some(s.clone()),
        (v, _) => Some(v.to_string()),
    }
}

/// Checks one discovery message the way Home Assistant's schema would.
fn check_ha_config(topic: &str, config: &serde_json::Value) -> String {
    let parts: Vec<&str> = topic.split('/').collect();
    assert_eq!(
        parts.len(),
        5,
        "<prefix>/<component>/<node_id>/<object_id>/config: {topic}"
    );
    assert_eq!((parts[0], parts[4]), ("homeassistant", "config"), "{topic}");
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    assert!(
        id_ok(parts[2]) && id_ok(parts[3]),
        "node and object ids: {topic}"
    );
    let component = parts[1];
    let (required, extra) = ha_platform_keys(component);
    let obj = config.as_object().expect("a JSON object");
    for key in required {
        assert!(
            obj.get(*key).is_some_and(|v| v.is_string()),
            "{topic}: {key} missing"
        );
    }
    for key in obj.keys() {
        assert!(
            HA_COMMON_KEYS.contains(&key.as_str())
                || required.contains(&key.as_str())
                || extra.contains(&key.as_str()),
            "{topic}: {key} is not a documented key"
        );
    }
    assert!(obj["unique_id"].is_string(), "{topic}: unique_id");
    let device = obj["device"].as_object().expect("a device block");
    for key in device.keys() {
        assert!(
            [
                "configuration_url",
                "connections",
                "hw_version",
                "identifiers",
                "manufacturer",
                "model",
                "model_id",
                "name",
                "serial_number",
                "suggested_area",
                "sw_version",
                "via_device"
            ]
            .contains(&key.as_str()),
            "{topic}: device.{key}"
        );
    }
    assert!(
        device["identifiers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert!(obj["origin"]["name"].is_string(), "{topic}: origin.name");
    if let Some(c) = obj.get("state_class") {
        assert!(["measurement", "total", "total_increasing"].contains(&c.as_str().unwrap_or("")));
    }
    if let Some(c) = obj.get("entity_category") {
        assert!(["config", "diagnostic"].contains(&c.as_str().unwrap_or("")));
    }
    match (component, obj.get("device_class").and_then(|c| c.as_str())) {
        ("sensor", Some("data_rate")) => assert!(
            [
                "bit/s", "kbit/s", "Mbit/s", "Gbit/s", "B/s", "kB/s", "MB/s", "GB/s", "KiB/s",
                "MiB/s", "GiB/s"
            ]
            .contains(&obj["unit_of_measurement"].as_str().unwrap_or("")),
            "{topic}: a data_rate unit"
        ),
        ("binary_sensor", Some(c)) => assert_eq!(c, "connectivity", "{topic}"),
        (_, None) => {}
        (_, Some(c)) => panic!("{topic}: device_class {c}"),
    }
    if let Some(list) = obj.get("availability") {
        for a in list.as_array().expect("a list") {
            assert!(a["topic"].is_string(), "{topic}: availability topic");
        }
    }
    component.to_owned()
}

/// Messages seen per topic: (retained, payload), in arrival order.
type Seen = std::collections::BTreeMap<String, Vec<(bool, Vec<u8>)>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_finds_the_camera_its_sensors_and_its_pictures_on_the_broker() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (broker, mut cam) = online_camera_from("cam", |port| {
        camera_config(
            "cam",
            port,
            "[homeassistant]\nenabled = true\nsnapshot_interval_s = 600\ntelemetry_interval_s = 1\n",
        )
    })
    .await;
    let mut opts = MqttOptions::new("ha", "127.0.0.1", broker.port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe("#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let mut got: Seen = Default::default();
    let mut collect = async |got: &mut Seen, limit: Duration, done: &dyn Fn(&Seen) -> bool| {
        let end = tokio::time::Instant::now() + limit;
        while !done(got) {
            match tokio::time::timeout_at(end, events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => got
                    .entry(p.topic.clone())
                    .or_default()
                    .push((p.retain, p.payload.to_vec())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("broker link: {e}"),
                Err(_) => return false,
            }
        }
        true
    };
    let ready = collect(&mut got, Duration::from_secs(10), &|g| {
        g.keys().filter(|t| t.starts_with("homeassistant/")).count() == 4
            && g.contains_key("edgecam/cam/snapshot")
            && g.contains_key("edgecam/cam/telemetry")
    })
    .await;
    assert!(
        ready,
        "discovery, snapshot and telemetry: {:?}",
        got.keys().collect::<Vec<_>>()
    );

    // The discovery configs, retained, as Home Assistant's schema wants them.
    let status = got["edgecam/cam/status"].last().expect("status").1.clone();
    let telemetry = got["edgecam/cam/telemetry"]
        .last()
        .expect("telemetry")
        .1
        .clone();
    let payload_of = |topic: &str| -> Vec<u8> {
        match topic {
            "edgecam/cam/status" => status.clone(),
            "edgecam/cam/telemetry" => telemetry.clone(),
            other => panic!("a state topic nobody publishes: {other}"),
        }
    };
    let mut components = vec![];
    let mut unique_ids = std::collections::BTreeSet::new();
    for (topic, messages) in got.iter().filter(|(t, _)| t.starts_with("homeassistant/")) {
        let (_, payload) = messages.last().expect("a message");
        let config: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
        components.push(check_ha_config(topic, &config));
        assert!(
            unique_ids.insert(config["unique_id"].to_string()),
            "unique ids"
        );
        assert_eq!(
            config["device"]["identifiers"][0], "edgecam_cam",
            "one device"
        );
        for a in config["availability"].as_array().into_iter().flatten() {
            let t = a["topic"].as_str().unwrap_or("");
            let state = render(a["value_template"].as_str().unwrap_or(""), &payload_of(t));
            assert_eq!(state.as_deref(), Some("online"), "{topic}: availability");
        }
        if let Some(t) = config["state_topic"].as_str() {
            let value = render(
                config["value_template"].as_str().unwrap_or(""),
                &payload_of(t),
            )
            .unwrap_or_else(|| panic!("{topic}: its template renders"));
            match config["unique_id"].as_str().unwrap_or("") {
                "edgecam_cam_viewers" => assert_eq!(value, "0"),
                "edgecam_cam_bitrate" => {
                    let kbps: f64 = value.parse().expect("a number");
                    // 800 kbit/s video + 32 kbit/s audio, averaged over 1 s.
                    assert!((200.0..3000.0).contains(&kbps), "bitrate {kbps}");
                }
                "edgecam_cam_online" => {
                    assert_eq!(value, config["payload_on"].as_str().unwrap_or(""))
                }
                other => panic!("an unexpected sensor {other}"),
            }
        }
    }
    components.sort();
    assert_eq!(components, ["binary_sensor", "camera", "sensor", "sensor"]);

    // The camera entity's picture: a JPEG, retained.
    let jpeg = got["edgecam/cam/snapshot"]
        .last()
        .expect("a picture")
        .1
        .clone();
    // Retained (MQTT 3.1.1 §3.3.1.3): a client that subscribes now, as Home Assistant
    // does after a restart, gets the configs and the last picture, flagged retained.
    let mut late_opts = MqttOptions::new("ha-late", "127.0.0.1", broker.port);
    late_opts.set_max_packet_size(4 << 20, 4 << 20);
    let (late, mut late_events) = AsyncClient::new(late_opts, 64);
    late.subscribe("homeassistant/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    late.subscribe("edgecam/cam/snapshot", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let mut retained = std::collections::BTreeSet::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while retained.len() < 5 {
        match tokio::time::timeout_at(end, late_events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.retain => {
                retained.insert(p.topic.clone());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("broker link: {e}"),
            Err(_) => break,
        }
    }
    assert_eq!(
        retained.len(),
        5,
        "4 configs and the picture, retained: {retained:?}"
    );
    let (width, height, _) = decode_jpeg(&jpeg);
    assert_eq!((width, height), (640, 360));

    // On request, a new picture (the periodic one is 10 minutes away).
    let before = got["edgecam/cam/snapshot"].len();
    client
        .publish("edgecam/cam/snapshot/request", QoS::AtLeastOnce, false, "")
        .await
        .expect("request");
    let requested = collect(&mut got, Duration::from_secs(5), &|g| {
        g["edgecam/cam/snapshot"].len() > before
    })
    .await;
    assert!(requested, "a snapshot follows the request");
    assert_ne!(
        got["edgecam/cam/snapshot"].last().map(|m| &m.1),
        Some(&jpeg)
    );

    // The camera dies: its Last Will makes the entities unavailable and `online` off.
    cam.kill();
    let offline = collect(&mut got, Duration::from_secs(10), &|g| {
        g["edgecam/cam/status"]
            .last()
            .is_some_and(|(_, p)| render("{{ value_json.state }}", p).as_deref() == Some("offline"))
    })
    .await;
    assert!(offline, "the Last Will arrives and reads offline");
}

/// The directory with GStreamer's WHEP client plugin (`scripts/whep-client.sh`, cached).
fn whep_plugin_dir() -> std::path::PathBuf {
    let out = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/whep-client.sh"
    ))
    .output()
    .expect("scripts/whep-client.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `curl` with `args`; the status code and the response headers (names lower-cased,
/// values as sent).
fn curl_status(args: &[&str]) -> (u16, String) {
    let (code, head, _) = curl(args);
    (code, head)
}

/// `curl` with `args`: the status code, the response headers (names lower-cased, values
/// as sent) and the body.
fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_file = dir.path().join("body");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-o"])
        .arg(&body_file)
        .args(args)
        .output()
        .expect("curl");
    let head: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{value}\n", name.to_ascii_lowercase()),
            None => format!("{l}\n"),
        })
        .collect();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head, std::fs::read(&body_file).unwrap_or_default())
}

/// A `whepsrc` pipeline decoding video and audio into counting appsinks.
struct WhepClient {
    pipeline: gstreamer::Pipeline,
    video: Arc<AtomicU64>,
    audio: Arc<AtomicU64>,
    first_video: Arc<std::sync::OnceLock<std::time::Instant>>,
    started: std::time::Instant,
}

impl WhepClient {
    fn start(endpoint: &str, token: &str) -> Self {
        use gstreamer::prelude::*;
        // whepsrc's pads all have the template caps application/x-rtp, so gst-launch's
        // delayed linking could hand the audio pad to the video branch: each pad is
        // linked here, by the `media` of its caps, to a decoding branch of its own.
        let launch = format!(
            "whepsrc name=w whep-endpoint={endpoint} auth-token={token} use-link-headers=true \
             video-caps=\"application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1,profile-level-id=(string)42e01f\" \
             audio-caps=\"application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2\""
        );
        let whepsrc = gstreamer::parse::launch(&launch).expect("whepsrc");
        let pipeline = gstreamer::Pipeline::new();
        pipeline.add(&whepsrc).expect("add whepsrc");
        let started = std::time::Instant::now();
        let (video, audio) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let first_video: Arc<std::sync::OnceLock<std::time::Instant>> = Arc::default();
        let weak = pipeline.downgrade();
        let (v, a, f) = (video.clone(), audio.clone(), first_video.clone());
        whepsrc.connect_pad_added(move |_, pad| {
            // Its caps are known only once media flows: the pad is linked when its
            // first buffer waits in a blocking probe, by the `media` of its caps.
            let (weak, v, a, f) = (weak.clone(), v.clone(), a.clone(), f.clone());
            pad.add_probe(
                gstreamer::PadProbeType::BLOCK
                    | gstreamer::PadProbeType::BUFFER
                    | gstreamer::PadProbeType::BUFFER_LIST,
                move |pad, _| {
                    let Some(pipeline) = weak.upgrade() else {
                        return gstreamer::PadProbeReturn::Remove;
                    };
                    let media = pad
                        .current_caps()
                        .and_then(|c| c.structure(0).and_then(|s| s.get::<String>("media").ok()))
                        .unwrap_or_default();
                    let (chain, count, first) = match media.as_str() {
                        "video" => (
                            "rtph264depay ! h264parse ! openh264dec ! videoconvert",
                            v.clone(),
                            Some(f.clone()),
                        ),
                        "audio" => ("rtpopusdepay ! opusdec ! audioconvert", a.clone(), None),
                        _ => return gstreamer::PadProbeReturn::Remove,
                    };
                    let branch = gstreamer::parse::bin_from_description(
                        &format!("queue ! {chain} ! appsink name=sink sync=false"),
                        true,
                    )
                    .expect("a decoding branch");
                    let sink = branch
                        .by_name("sink")
                        .and_then(|e| e.downcast::<gstreamer_app::AppSink>().ok())
                        .expect("appsink");
                    sink.set_callbacks(
                        gstreamer_app::AppSinkCallbacks::builder()
                            .new_sample(move |s| {
                                let _ = s.pull_sample();
                                if let Some(first) = &first {
                                    let _ = first.set(std::time::Instant::now());
                                }
                                count.fetch_add(1, Ordering::Relaxed);
                                Ok(gstreamer::FlowSuccess::Ok)
                            })
                            .build(),
                    );
                    let _ = pipeline.add(&branch);
                    let _ = branch.sync_state_with_parent();
                    if let Some(sinkpad) = branch.static_pad("sink") {
                        let _ = pad.link(&sinkpad);
                    }
                    gstreamer::PadProbeReturn::Remove
                },
            );
        });
        pipeline
            .set_state(gstreamer::State::Playing)
            .expect("playing");
        Self {
            pipeline,
            video,
            audio,
            first_video,
            started,
        }
    }

    /// Waits until both counts reach their minimum, at most `limit`.
    async fn decoded(&self, video: u64, audio: u64, limit: Duration) -> (u64, u64) {
        let end = std::time::Instant::now() + limit;
        loop {
            let got = (
                self.video.load(Ordering::Relaxed),
                self.audio.load(Ordering::Relaxed),
            );
            if (got.0 >= video && got.1 >= audio) || std::time::Instant::now() >= end {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Error and warning messages the pipeline posted so far.
    fn bus_errors(&self) -> Vec<String> {
        use gstreamer::prelude::*;
        let Some(bus) = self.pipeline.bus() else {
            return vec![];
        };
        std::iter::from_fn(|| {
            bus.pop_filtered(&[
                gstreamer::MessageType::Error,
                gstreamer::MessageType::Warning,
            ])
        })
        .map(|m| match m.view() {
            gstreamer::MessageView::Error(e) => format!("error: {} ({:?})", e.error(), e.debug()),
            gstreamer::MessageView::Warning(w) => {
                format!("warning: {} ({:?})", w.error(), w.debug())
            }
            _ => String::new(),
        })
        .collect()
    }

    fn first_frame_after(&self) -> Option<Duration> {
        self.first_video
            .get()
            .map(|t| t.duration_since(self.started))
    }
}

impl Drop for WhepClient {
    fn drop(&mut self) {
        use gstreamer::prelude::*;
        let _ = self.pipeline.set_state(gstreamer::State::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_client_nobody_here_wrote_decodes_h264_and_opus_beside_an_mqtt_viewer() {
    use edgecam_testkit::signal::Invitation;
    let plugins = whep_plugin_dir();
    gstreamer::init().expect("gst init");
    assert!(
        gstreamer::Registry::get().scan_path(&plugins),
        "whepsrc registered from {}",
        plugins.display()
    );
    // The camera alone in a namespace: webrtcbin's ICE agent (libnice) gathers no
    // loopback candidates, so the client reaches the camera over a veth link.
    let link = common::netns::HostLink::new().expect("namespace and veth (the suite runs as root)");
    let broker = Mosquitto::start_also_on(&link.host_ip);
    // A TURN server beside the camera: WHEP callers get its minted credentials as
    // `Link` headers.
    let _turn = common::nat::Coturn::start_in(
        &link.ns,
        &link.ns_ip,
        &common::nat::CoturnOptions {
            secret: "whep-turn-secret",
            tls: None,
            clock_ahead: None,
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("access-secret");
    std::fs::write(&secret_file, [7u8; 32]).expect("secret");
    let config = camera_config("cam", broker.port, "")
        .replace(
            &format!("broker = \"mqtt://127.0.0.1:{}\"", broker.port),
            &format!("broker = \"mqtt://{}:{}\"", link.host_ip, broker.port),
        )
        .replace(
            "[http]\nenabled = false",
            &format!("[http]\nlisten = \"{}:8080\"", link.ns_ip),
        )
        .replace(
            "[access]\nmode = \"open\"",
            &format!("[access]\nmode = \"invite\"\nsecret_file = \"{}\"", secret_file.display()),
        )
        .replace(
            "udp_bind = [\"127.0.0.1\"]",
            &format!(
                "udp_bind = [\"{ip}\"]\nmax_viewers = 2\n\
                 [[webrtc.ice_servers]]\nurls = [\"turn:{ip}:3478\"]\nsecret = \"whep-turn-secret\"",
                ip = link.ns_ip
            ),
        );
    let cam = Edgecam::start_in(Some(&link.ns), Some(&config));
    wait_status(broker.port, "cam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    let base = format!("http://{}:8080", link.ns_ip);
    let whep = format!("{base}/whep");
    let exp = edgecam::ice::unix_now() + 3600;
    let secret = edgecam::access::keys::Secret::from_bytes([7u8; 32]);
    let token = |name: &str| {
        edgecam::access::keys::ViewerKey::derive(&secret, "cam", name, exp).token("cam", name, exp)
    };

    // A WHEP player on another origin may call it (CORS), as every request carries a
    // token of its own.
    let (code, head) = curl_status(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: http://dashboard.example",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: authorization, content-type",
        &whep,
    ]);
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(
        head.contains("access-control-allow-headers: authorization,content-type"),
        "{head}"
    );
    // Without an invitation's token: 401, before any SDP is looked at.
    let (code, _) = curl_status(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/sdp",
        "--data",
        "v=0",
        &whep,
    ]);
    assert_eq!(code, 401);
    let bob = format!("Authorization: Bearer {}", token("bob"));
    let (code, _) = curl_status(&[
        "-X",
        "POST",
        "-H",
        &bob,
        "-H",
        "Content-Type: text/plain",
        "--data",
        "v=0",
        &whep,
    ]);
    assert_eq!(code, 415, "an offer is application/sdp");
    let (code, _) = curl_status(&[
        "-X",
        "POST",
        "-H",
        &bob,
        "-H",
        "Content-Type: application/sdp",
        "--data",
        "v=0",
        &whep,
    ]);
    assert_eq!(code, 400, "a malformed offer");

    // An MQTT viewer and a WHEP client, in one run.
    let invited = common::viewer::Endpoint::new(broker.port, "cam", "v1")
        .invited(Invitation::mint(&secret, "cam", "alice", exp));
    let mqtt = Viewer::join_on(invited, true, &link.host_ip).await;
    let client = WhepClient::start(&whep, &token("carol"));
    let (v, a) = client.decoded(30, 25, Duration::from_secs(20)).await;
    assert!(
        v >= 30 && a >= 25,
        "whepsrc decoded {v} video frames and {a} audio buffers: {:?}",
        client.bus_errors()
    );
    let (ok, r) = mqtt
        .wait_until(Duration::from_secs(10), |r| r.decoded_video >= 30)
        .await;
    assert!(ok, "the MQTT viewer plays too: {r:?}");
    println!(
        "time to first decoded frame: WHEP (whepsrc: pipeline start → decoded frame, its own ICE gathering and POST included) {} ms, \
         MQTT (webrtc-rs: offer published → first complete IDR) {} ms",
        client.first_frame_after().map_or(0, |d| d.as_millis()),
        r.first_frame_after_offer.map_or(0, |d| d.as_millis())
    );

    // Both slots are taken: a third viewer, over WHEP, gets 503 and Retry-After.
    let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\n\
                 a=mid:0\r\na=recvonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
                 a=fingerprint:sha-256 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00\r\n\
                 a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n\
                 a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
    let (code, head) = curl_status(&[
        "-X",
        "POST",
        "-H",
        &bob,
        "-H",
        "Content-Type: application/sdp",
        "--data-binary",
        offer,
        &whep,
    ]);
    assert_eq!(
        code, 503,
        "the viewer limit holds across front-ends: {head}"
    );
    assert!(head.contains("retry-after: 2"), "{head}");

    // The live WHEP session's resource: PATCH with a candidate, then an ICE restart
    // (422), DELETE (200), and then it is gone (404).
    mqtt.bye().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, head) = curl_status(&[
        "-X",
        "POST",
        "-H",
        &bob,
        "-H",
        "Content-Type: application/sdp",
        "--data-binary",
        offer,
        &whep,
    ]);
    assert_eq!(code, 201, "a slot is free again: {head}");
    assert!(head.contains("content-type: application/sdp"), "{head}");
    let turn_link = head
        .lines()
        .find(|l| l.starts_with("link: "))
        .unwrap_or_else(|| panic!("ICE servers as Link headers: {head}"));
    assert!(
        turn_link.starts_with(&format!(
            "link: <turn:{}:3478>; rel=\"ice-server\"; username=\"",
            link.ns_ip
        )) && turn_link.contains(":whep-")
            && turn_link.ends_with("; credential-type=\"password\""),
        "a TURN server with credentials minted for this session: {turn_link}"
    );
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(|l| l.trim().to_owned())
        .expect("a Location header");
    assert!(location.starts_with("/whep/whep-"), "{location}");
    let resource = format!("{base}{location}");
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n\
                a=candidate:1 1 udp 2130706431 10.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let sdpfrag = "Content-Type: application/trickle-ice-sdpfrag";
    let (code, _) = curl_status(&[
        "-X",
        "PATCH",
        "-H",
        &bob,
        "-H",
        sdpfrag,
        "--data-binary",
        frag,
        &resource,
    ]);
    assert_eq!(code, 204, "trickled candidates: {}", cam.log_text());
    let restart = frag.replace("abcd", "efgh");
    let (code, _) = curl_status(&[
        "-X",
        "PATCH",
        "-H",
        &bob,
        "-H",
        sdpfrag,
        "--data-binary",
        &restart,
        &resource,
    ]);
    assert_eq!(code, 422, "ICE restarts are not supported");
    let (code, _) = curl_status(&["-X", "DELETE", &resource]);
    assert_eq!(code, 401, "DELETE wants the token too");
    let (code, _) = curl_status(&["-X", "DELETE", "-H", &bob, &resource]);
    assert_eq!(code, 200);
    let (code, _) = curl_status(&["-X", "DELETE", "-H", &bob, &resource]);
    assert_eq!(code, 404, "gone");

    // The whepsrc session played on throughout.
    let before = client.video.load(Ordering::Relaxed);
    let (v, _) = client.decoded(before + 15, 0, Duration::from_secs(5)).await;
    assert!(v >= before + 15, "whepsrc still plays: {before} → {v}");

    // /metrics counts the WHEP viewer by its front-end, and the two requests without a
    // token by their reason. (The camera loop refreshes its session view each second.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H", &bob])
        .arg(format!("{base}/metrics"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let metrics = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    assert_eq!(
        value(
            &metrics,
            "edgecam_auth_refusals_total",
            &[("frontend", "http"), ("reason", "no valid bearer token")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        metrics
            .samples
            .iter()
            .any(|x| x.metric == "edgecam_viewers" && x.labels.get("frontend") == Some("whep")),
        "{text}"
    );
}
