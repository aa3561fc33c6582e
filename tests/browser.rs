//! End to end in a real browser: Debian's Chromium (driven by playwright-core) loads the
//! viewer page, connects to the broker over MQTT-over-WebSocket, offers, and decodes
//! H.264 with Opus audio. Camera side and browser run in separate network namespaces
//! joined by a veth link, with no route anywhere else.

mod common;

use common::browser::run_browser;
use common::netns::NetPair;
use common::{Edgecam, Mosquitto};
use serde_json::Value;

fn assert_watchable(result: &Value) {
    let stats = &result["stats"];
    assert_eq!(result["ok"], true, "browser did not play: {result:#}");
    assert!(
        stats["framesDecoded"].as_u64().unwrap_or(0) > 10,
        "{result:#}"
    );
    assert!(
        stats["audioPacketsReceived"].as_u64().unwrap_or(0) > 10,
        "{result:#}"
    );
    assert_eq!(stats["videoCodec"], "video/H264", "{result:#}");
    assert_eq!(stats["audioCodec"], "audio/opus", "{result:#}");
    assert!(stats["width"].as_u64().unwrap_or(0) > 0, "{result:#}");
    // Chromium may know its own side only as peer-reflexive; the camera's side must be
    // its host candidate: a direct path over the veth link, no relay.
    let pair = stats["candidatePair"].as_str().unwrap_or("");
    assert!(
        pair.contains("/host udp"),
        "direct host path over the veth link: {result:#}"
    );
    assert!(
        stats["firstFrameMs"].as_f64().is_some(),
        "first frame timed: {result:#}"
    );
}

#[test]
fn chromium_plays_via_external_mosquitto_over_websocket() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let config = format!(
        "[camera]\nid = \"porch\"\nname = \"Porch\"\n[access]\nmode = \"open\"\n[video]\nsource = \"test\"\nwidth = 640\nheight = 360\n\
         [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [http]\nlisten = \"0.0.0.0:8080\"\nbroker_ws_url = \"ws://{}:9001\"\n",
        net.camera_ip
    );
    let cam = Edgecam::start_in(Some(&net.camera), Some(&config));
    let result = run_browser(
        &net,
        &format!("http://{}:8080/?camera=porch", net.camera_ip),
        "external-mosquitto",
    );
    assert_watchable(&result);
    // A camera with audio and no talk-back is the shape the page guesses: its offer
    // was made while the broker connection was still on its way.
    assert_eq!(result["stats"]["offerMadeAhead"], true, "{result:#}");
    assert!(cam.log_text().contains("new session"), "{}", cam.log_text());
}

#[test]
fn chromium_plays_standalone_with_no_config_at_all() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    // No config file: embedded broker, served page, test pattern and tone, invite mode
    // with a secret generated at the first start; the page opens the link `edgecam
    // invite` prints from that secret.
    let cam = Edgecam::start_in(Some(&net.camera), None);
    let secret = cam.state_dir().join("access-secret");
    for _ in 0..150 {
        if secret.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["invite", "--name", "me", "--ttl", "1h", "--no-qr"])
        .args(["--page-url", &format!("http://{}:8080/", net.camera_ip)])
        .env("STATE_DIRECTORY", cam.state_dir())
        .output()
        .expect("edgecam invite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mode = std::fs::metadata(&secret)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "the generated secret is private");
    let result = run_browser(&net, &link, "standalone");
    assert_watchable(&result);
    let log = cam.log_text();
    assert!(
        log.contains("no camera found: streaming the test pattern with a test tone"),
        "{log}"
    );
    assert!(log.contains("embedded MQTT broker"), "{log}");
}

/// Invite mode: the link `edgecam invite` prints plays in Chromium (the page signs with
/// the key in the fragment and verifies the camera), and a third client's forged
/// answer, config (attacker TURN, relay) and bye on the page's topic are dropped while
/// it keeps decoding.
#[test]
fn chromium_plays_an_invitation_and_drops_forged_camera_messages() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("access-secret");
    std::fs::write(&secret, [3u8; 32]).unwrap();
    let config = format!(
        "[camera]\nid = \"porch\"\n[video]\nsource = \"test\"\nwidth = 640\nheight = 360\n\
         [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [http]\nlisten = \"0.0.0.0:8080\"\nbroker_ws_url = \"ws://{ip}:9001\"\n\
         [access]\nmode = \"invite\"\nsecret_file = \"{}\"\n",
        secret.display(),
        ip = net.camera_ip
    );
    let file = dir.path().join("edgecam.toml");
    std::fs::write(&file, &config).unwrap();
    let cam = Edgecam::start_in(Some(&net.camera), Some(&config));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .arg("--config")
        .arg(&file)
        .args(["invite", "--name", "alice", "--ttl", "1h", "--no-qr"])
        .args(["--page-url", &format!("http://{}:8080/", net.camera_ip)])
        .output()
        .expect("edgecam invite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        link.contains("#v=1&broker=ws%3A%2F%2F") && link.contains("&name=alice&"),
        "{link}"
    );

    let forged = |session: &str| {
        let topic = format!("edgecam/porch/session/{session}/to-viewer");
        for msg in [
            r#"{"type":"answer","sdp":"v=0\r\n"}"#,
            r#"{"type":"config","iceServers":[{"urls":["turn:203.0.113.1:3478"],"username":"x","credential":"y"}],"iceTransportPolicy":"relay"}"#,
            r#"{"type":"bye","reason":"kicked"}"#,
        ] {
            let ok = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &net.camera,
                    "mosquitto_pub",
                    "-p",
                    "1883",
                    "-q",
                    "1",
                ])
                .args(["-t", &topic, "-m", msg])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mosquitto_pub");
        }
    };
    // The page's JSON endpoints want the invitation's token; every response carries
    // the security headers. (curl in the viewer's namespace, as a neighbour would ask.)
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.viewer,
                "curl",
                "-s",
                "--max-time",
                "5",
            ])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let base = format!("http://{}:8080", net.camera_ip);
    let exp = link
        .split("&exp=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .and_then(|e| e.parse::<u64>().ok())
        .expect("exp in the link");
    let token = edgecam::access::keys::ViewerKey::derive(
        &edgecam::access::keys::Secret::from_bytes([3; 32]),
        "porch",
        "alice",
        exp,
    )
    .token("porch", "alice", exp);
    let bearer = format!("Authorization: Bearer {token}");
    let mut live_stats = String::new();
    let result = common::browser::Browser::new(&net.viewer, &link, "invite")
        .hold(std::time::Duration::from_secs(5))
        .run(|playing| {
            forged(playing["stats"]["session"].as_str().expect("session id"));
            // The session list is refreshed once a second (`sessions` is ≤ 1 s old), and
            // the page may play sooner than that after its offer: ask again, up to 3 s.
            for _ in 0..15 {
                live_stats = curl(&["-H", &bearer, &format!("{base}/api/stats")]);
                let listed = serde_json::from_str::<Value>(&live_stats)
                    .ok()
                    .and_then(|d| d["sessions"].as_array().map(Vec::len));
                if listed == Some(1) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    assert_watchable(&result);
    assert_eq!(
        result["ok"], true,
        "decoding stopped after the forgeries: {result:#}"
    );
    assert!(
        result["stats"]["rejected"].as_u64() >= Some(3),
        "forgeries not dropped: {result:#}"
    );
    assert_eq!(
        result["stats"]["connectionState"], "connected",
        "{result:#}"
    );
    assert!(
        cam.log_text().contains("access mode invite"),
        "{}",
        cam.log_text()
    );
    // While the page played, /api/stats listed its session, but not by its id: every
    // invited viewer may read the stats, and a session id is a client id to take over.
    let session = result["stats"]["session"].as_str().expect("session id");
    let doc: Value = serde_json::from_str(&live_stats).unwrap_or(Value::Null);
    assert_eq!(
        doc["sessions"].as_array().map(Vec::len),
        Some(1),
        "{live_stats}"
    );
    assert!(
        !live_stats.contains(session),
        "a session id in /api/stats: {live_stats}"
    );
    let code = |path: &str, auth: Option<&str>| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        if let Some(h) = auth {
            args.extend(["-H", h]);
        }
        let url = format!("{base}{path}");
        args.push(&url);
        curl(&args)
    };
    assert_eq!(code("/api/stats", None), "401");
    assert_eq!(code("/config.json", None), "401");
    assert_eq!(code("/metrics", None), "401");
    assert_eq!(code("/snapshot.jpg", None), "401");
    assert_eq!(
        code("/api/stats", Some("Authorization: Bearer alice.1.AAAA")),
        "401"
    );
    assert_eq!(code("/api/stats", Some(&bearer)), "200");
    assert_eq!(code("/metrics", Some(&bearer)), "200");
    assert_eq!(code("/snapshot.jpg", Some(&bearer)), "200");
    assert_eq!(code("/config.json", Some(&bearer)), "200");
    assert_eq!(code("/", None), "200", "the page itself is public");
    let headers = curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/")]).to_ascii_lowercase();
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(headers.contains("frame-ancestors 'none'"), "{headers}");
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
}

/// Firefox ESR without its OpenH264 plugin (as on a machine where it was never
/// downloaded, or in hardened builds) offers VP8, VP9 and AV1 but no H.264: it gets
/// the camera's VP8 rung, which is encoded only while it watches.
#[test]
fn firefox_without_openh264_plays_the_vp8_rung() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = Edgecam::start_in(Some(&net.camera), Some(&camera_in(&net, "")));
    let result = common::browser::Browser::new(
        &net.viewer,
        &format!("http://{}:8080/?camera=porch", net.camera_ip),
        "firefox-vp8",
    )
    .firefox()
    .hold(std::time::Duration::from_secs(5))
    .run(|_| {});
    let stats = &result["stats"];
    // Firefox's getStats has no framesPerSecond: frames decoded over the 5 s held.
    let held = stats["framesDecoded"].as_f64().unwrap_or(0.0)
        - result["playingStats"]["framesDecoded"]
            .as_f64()
            .unwrap_or(0.0);
    eprintln!(
        "firefox: {} frames decoded, {:.1} fps over 5 s, {}x{}, codec {}, first frame {} ms after the offer",
        stats["framesDecoded"],
        held / 5.0,
        stats["width"],
        stats["height"],
        stats["videoCodec"],
        stats["firstFrameMs"]
    );
    assert_eq!(result["ok"], true, "Firefox did not play: {result:#}");
    assert_eq!(stats["videoCodec"], "video/VP8", "{result:#}");
    assert_eq!(stats["audioCodec"], "audio/opus", "{result:#}");
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(640), Some(360)),
        "the VP8 rung's size: {result:#}"
    );
    assert!(
        stats["framesDecoded"].as_u64().unwrap_or(0) > 100,
        "5 s of playing decodes well over 100 frames: {result:#}"
    );
    let log = cam.log_text();
    assert!(log.contains("sending the VP8 rung"), "{log}");
    assert!(
        log.contains("VP8 rung started: a viewer without H.264 watches"),
        "{log}"
    );
    // The rung stops with its last viewer (the browser closed: ICE times out, or bye).
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cam.log_text().contains("VP8 rung stopped") && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        cam.log_text()
            .contains("VP8 rung stopped: no viewer needs it"),
        "{}",
        cam.log_text()
    );
}

/// With the VP8 rung switched off, the same Firefox is refused with `bad-offer`, and
/// the page says why instead of the `unknown-session` errors that its trickled
/// candidates draw afterwards.
#[test]
fn a_browser_without_a_usable_codec_is_told_why() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = Edgecam::start_in(
        Some(&net.camera),
        Some(&camera_in(&net, "vp8_bitrate_kbps = 0\n")),
    );
    let result = common::browser::Browser::new(
        &net.viewer,
        &format!("http://{}:8080/?camera=porch", net.camera_ip),
        "firefox-refused",
    )
    .firefox()
    .timeout(std::time::Duration::from_secs(12))
    .run(|_| {});
    assert_eq!(result["ok"], false, "{result:#}");
    let log: Vec<&str> = result["log"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let refused = log
        .iter()
        .position(|l| {
            l.contains("the camera cannot serve this browser: this browser offers no video codec the camera can send")
        })
        .unwrap_or_else(|| panic!("the page says why: {log:#?}"));
    assert!(
        !log[refused..].iter().any(|l| l.contains("unknown-session")),
        "nothing hides the reason: {log:#?}"
    );
    assert!(cam.log_text().contains("VP8 is off"), "{}", cam.log_text());
}

/// An open camera in `net.camera` on its Mosquitto (port 1883, WebSocket 9001),
/// serving the page on port 8080; `video` is appended to `[video]`.
fn camera_in(net: &NetPair, video: &str) -> String {
    format!(
        "[camera]\nid = \"porch\"\nname = \"Porch\"\n[access]\nmode = \"open\"\n[video]\nsource = \"test\"\n{video}\
         [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [http]\nlisten = \"0.0.0.0:8080\"\nbroker_ws_url = \"ws://{}:9001\"\n",
        net.camera_ip
    )
}
