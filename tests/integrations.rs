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
//!   Last Will turning the entities unavailable.

mod common;

use common::viewer::{Viewer, online_camera_from};
use common::{camera_config, free_port};
use prometheus_parse::{Scrape, Value};
use std::time::Duration;

/// `GET http://127.0.0.1:{port}{path}`: status, headers (lower-cased) and body.
fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_file = dir.path().join("body");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "-", "-o"])
        .arg(&body_file)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, std::fs::read(&body_file).unwrap_or_default())
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
    let http = free_port();
    let (broker, _cam) = online_camera_from("cam", |port| {
        camera_config("cam", port, "").replace(
            "[http]\nenabled = false",
            &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
        )
    })
    .await;
    let idle = scrape(http);
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
    let http = free_port();
    let (_broker, _cam) = online_camera_from("cam", |port| {
        camera_config("cam", port, "").replace(
            "[http]\nenabled = false",
            &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
        )
    })
    .await;
    let encoded = |s: &Scrape| value(s, "edgecam_snapshots_encoded_total", &[]).unwrap_or(-1.0);
    // Idle: the branch has encoded nothing.
    assert_eq!(encoded(&scrape(http)), 0.0);

    let started = std::time::Instant::now();
    let (status, head, jpeg) = get(http, "/snapshot.jpg");
    let took = started.elapsed();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: image/jpeg"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let mut decoder = jpeg_decoder::Decoder::new(jpeg.as_slice());
    let pixels = decoder.decode().expect("a JPEG that decodes");
    let info = decoder.info().expect("JPEG info");
    assert_eq!((info.width, info.height), (640, 360), "the stream's size");
    assert_eq!(pixels.len(), 640 * 360 * 3);
    // Not a blank picture: the SMPTE bars span many grey levels.
    let levels: std::collections::BTreeSet<u8> = pixels.iter().step_by(97).copied().collect();
    assert!(levels.len() > 20, "{} distinct levels", levels.len());
    println!(
        "snapshot: {} bytes, {}x{}, {} ms (curl, debug build)",
        jpeg.len(),
        info.width,
        info.height,
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
    let mut decoder = jpeg_decoder::Decoder::new(snap.payload.as_slice());
    decoder.decode().expect("a JPEG that decodes");
    let info = decoder.info().expect("JPEG info");
    assert_eq!((info.width, info.height), (640, 360));
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
        let (retained, payload) = messages.last().expect("a message");
        assert!(*retained, "{topic} is retained");
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
    let (retained, jpeg) = got["edgecam/cam/snapshot"]
        .last()
        .expect("a picture")
        .clone();
    assert!(retained);
    let mut decoder = jpeg_decoder::Decoder::new(jpeg.as_slice());
    decoder.decode().expect("a JPEG that decodes");
    assert_eq!(
        decoder.info().map(|i| (i.width, i.height)),
        Some((640, 360))
    );

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
