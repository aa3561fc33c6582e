//! NAT traversal with real parts: Debian's coturn and Mosquitto in a "relay" network
//! namespace, edgecam in a camera namespace, headless Chromium in a viewer namespace.
//! Camera and viewer can each reach the relay but not each other (nftables drops what
//! the relay would forward between them), so media must go through TURN with the
//! short-lived TURN REST credentials edgecam mints from its secret file. The camera runs
//! invite mode: the page opens an invitation link, so the invited path is the one
//! proven over TURN (UDP, TCP, TLS) and through an ICE restart.

mod common;

use common::browser::{Browser, page_file_url};
use common::nat::{Coturn, CoturnOptions, RelayNet, self_signed_cert};
use common::{Edgecam, Mosquitto};
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "edgecam-test-secret";
/// The camera's access secret (invite mode).
const ACCESS_SECRET: [u8; 32] = [9; 32];

/// The invitation fragment the page opens (what `edgecam invite` puts after `#`).
fn invitation_fragment() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key = edgecam::access::keys::ViewerKey::derive(
        &edgecam::access::keys::Secret::from_bytes(ACCESS_SECRET),
        "porch",
        "nat",
        exp,
    );
    format!(
        "#v=1&camera=porch&name=nat&exp={exp}&key={}",
        key.to_base64url()
    )
}

/// One small internet: namespaces, broker, TURN server, camera.
struct World {
    net: RelayNet,
    turn: Coturn,
    cam: Edgecam,
    _broker: Mosquitto,
    _dir: tempfile::TempDir,
}

struct Setup<'a> {
    /// ICE server URLs the camera uses and hands to viewers (`{ip}` = relay address).
    urls: &'a [&'a str],
    /// The secret edgecam holds (coturn always holds [`SECRET`]).
    camera_secret: &'a str,
    /// Extra `[webrtc]` lines.
    webrtc: &'a str,
    tls: bool,
    coturn_clock_ahead: Option<Duration>,
    direct_allowed: bool,
    viewer_udp_blocked: bool,
}

/// The camera's UDP TURN URL plus the one a viewer without UDP must use.
const TURN_TCP: &[&str] = &[
    "turn:{ip}:3478?transport=udp",
    "turn:{ip}:3478?transport=tcp",
];
const TURN_TLS: &[&str] = &[
    "turn:{ip}:3478?transport=udp",
    "turns:{ip}:5349?transport=tcp",
];

impl Setup<'static> {
    /// The viewer's UDP is dropped; TURN offers `urls`.
    fn viewer_without_udp(urls: &'static [&'static str]) -> Self {
        Self {
            urls,
            viewer_udp_blocked: true,
            ..Self::default()
        }
    }

    /// The viewer's UDP is dropped; TURN over TLS with a test certificate.
    fn viewer_without_udp_tls() -> Self {
        Self {
            tls: true,
            ..Self::viewer_without_udp(TURN_TLS)
        }
    }
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            urls: &["turn:{ip}:3478?transport=udp"],
            camera_secret: SECRET,
            webrtc: "",
            tls: false,
            coturn_clock_ahead: None,
            direct_allowed: false,
            viewer_udp_blocked: false,
        }
    }
}

impl World {
    fn new(setup: &Setup<'_>) -> Self {
        let net = RelayNet::new().expect("network namespaces (needs root)");
        if setup.direct_allowed {
            net.allow_direct().unwrap();
        }
        if setup.viewer_udp_blocked {
            net.block_viewer_udp().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let cert = setup
            .tls
            .then(|| self_signed_cert(dir.path(), &net.relay_ip));
        let turn = Coturn::start_in(
            &net.relay,
            &net.relay_ip,
            &CoturnOptions {
                secret: SECRET,
                tls: cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                clock_ahead: setup.coturn_clock_ahead,
            },
        );
        let broker = Mosquitto::start_in(&net.relay, 1883, 9001);
        let secret_file = dir.path().join("turn-secret");
        std::fs::write(&secret_file, format!("{}\n", setup.camera_secret)).unwrap();
        let access_file = dir.path().join("access-secret");
        std::fs::write(&access_file, ACCESS_SECRET).unwrap();
        let servers = if setup.urls.is_empty() {
            String::new()
        } else {
            let urls: Vec<String> = setup
                .urls
                .iter()
                .map(|u| format!("\"{}\"", u.replace("{ip}", &net.relay_ip)))
                .collect();
            format!(
                "[[webrtc.ice_servers]]\nurls = [{}]\nsecret_file = \"{}\"\n",
                urls.join(", "),
                secret_file.display()
            )
        };
        let config = format!(
            "[camera]\nid = \"porch\"\n[video]\nsource = \"test\"\nwidth = 640\nheight = 360\n\
             [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://{}:1883\"\n\
             [http]\nenabled = false\n[access]\nmode = \"invite\"\nsecret_file = \"{}\"\n\
             [webrtc]\nconnect_timeout_s = 8\n{}\n{servers}",
            net.relay_ip,
            access_file.display(),
            setup.webrtc
        );
        let cam = Edgecam::start_in(Some(&net.camera), Some(&config));
        Self {
            net,
            turn,
            cam,
            _broker: broker,
            _dir: dir,
        }
    }

    fn page(&self, extra: &str) -> String {
        page_file_url(&format!(
            "broker=ws://{}:9001&camera=porch{extra}{}",
            self.net.relay_ip,
            invitation_fragment()
        ))
    }

    fn browser(&self, extra: &str, name: &str) -> Browser {
        Browser::new(&self.net.viewer, &self.page(extra), name)
    }

    /// Everything a failing assertion should show.
    fn explain(&self, result: &Value) -> String {
        format!(
            "browser: {result:#}\n--- edgecam log ---\n{}\n--- coturn log (tail) ---\n{}",
            self.cam.log_text(),
            tail(&self.turn.log_text(), 40)
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn pair(result: &Value) -> &str {
    result["stats"]["candidatePair"].as_str().unwrap_or("")
}

fn assert_plays(world: &World, result: &Value) {
    assert_eq!(result["ok"], true, "{}", world.explain(result));
    let stats = &result["stats"];
    assert!(
        stats["framesDecoded"].as_u64().unwrap_or(0) > 10,
        "{}",
        world.explain(result)
    );
    assert_eq!(
        stats["videoCodec"],
        "video/H264",
        "{}",
        world.explain(result)
    );
    // The invited path: the camera checked every request, the page every reply.
    assert!(world.cam.log_text().contains("access mode invite"));
    assert_eq!(stats["rejected"], 0, "{}", world.explain(result));
}

/// `local/remote` candidate types of Chromium's selected pair.
fn types(result: &Value) -> (String, String) {
    let p = pair(result);
    let types = p.split_whitespace().next().unwrap_or("");
    let (l, r) = types.split_once('/').unwrap_or(("", ""));
    (l.to_owned(), r.to_owned())
}

#[test]
fn relay_carries_media_when_camera_and_viewer_cannot_reach_each_other() {
    let world = World::new(&Setup::default());
    let result = world.browser("", "nat-relay-udp").run(|_| {});
    assert_plays(&world, &result);
    let (local, remote) = types(&result);
    assert!(
        local == "relay" || remote == "relay",
        "a relayed pair: {}",
        world.explain(&result)
    );
    let log = world.cam.log_text();
    // The camera got its own allocation with credentials it minted from the secret…
    assert!(log.contains("1 relay"), "{}", world.explain(&result));
    // …and the viewer one with the per-session credentials from `config`: coturn saw
    // REST usernames `<expiry>:<session>` and `<expiry>:porch-<session>`.
    let turn_log = world.turn.log_text();
    let session = result["stats"]["session"].as_str().unwrap_or("?");
    assert!(
        turn_log.contains(&format!(":{session}"))
            && turn_log.contains(&format!(":porch-{session}")),
        "both sides authenticated with minted credentials: {}",
        world.explain(&result)
    );
    assert!(!turn_log.contains(SECRET), "the secret never travels");
}

#[test]
fn control_without_turn_there_is_no_path_and_the_camera_says_so() {
    let world = World::new(&Setup {
        urls: &[],
        ..Setup::default()
    });
    let result = world
        .browser("", "nat-control")
        .timeout(Duration::from_secs(15))
        .run(|_| {});
    assert_eq!(
        result["stats"]["framesDecoded"].as_u64().unwrap_or(0),
        0,
        "the drop between camera and viewer works: {}",
        world.explain(&result)
    );
    let log = world.cam.log_text();
    assert!(
        log.contains("did not connect in time"),
        "{}",
        world.explain(&result)
    );
    let page_log = result["log"].to_string();
    assert!(
        page_log.contains("camera ended the session: timeout"),
        "viewer told with bye: {}",
        world.explain(&result)
    );
}

#[test]
fn viewer_without_udp_relays_over_turn_tcp() {
    let world = World::new(&Setup::viewer_without_udp(TURN_TCP));
    let result = world.browser("", "nat-relay-tcp").run(|_| {});
    assert_plays(&world, &result);
    assert_eq!(
        result["stats"]["relayProtocol"],
        "tcp",
        "{}",
        world.explain(&result)
    );
}

#[test]
fn viewer_without_udp_connects_directly_over_ice_tcp() {
    let world = World::new(&Setup {
        urls: &[],
        direct_allowed: true,
        viewer_udp_blocked: true,
        webrtc: "tcp_bind = [\"0.0.0.0\"]",
        ..Setup::default()
    });
    let result = world.browser("", "nat-ice-tcp").run(|_| {});
    assert_plays(&world, &result);
    assert!(
        pair(&result).ends_with(" tcp"),
        "ICE-TCP (RFC 6544) pair: {}",
        world.explain(&result)
    );
}

#[test]
fn viewer_relays_over_turns_tls() {
    let world = World::new(&Setup::viewer_without_udp_tls());
    let result = world
        .browser("", "nat-relay-tls")
        .accept_any_cert()
        .run(|_| {});
    assert_plays(&world, &result);
    assert_eq!(
        result["stats"]["relayProtocol"],
        "tls",
        "{}",
        world.explain(&result)
    );
}

#[test]
fn relay_only_asked_by_the_viewer_even_where_a_direct_path_exists() {
    let world = World::new(&Setup {
        direct_allowed: true,
        ..Setup::default()
    });
    let result = world
        .browser("&relay=1", "nat-viewer-relay-only")
        .run(|_| {});
    assert_plays(&world, &result);
    assert_eq!(types(&result).0, "relay", "{}", world.explain(&result));
    assert_eq!(result["stats"]["iceTransportPolicy"], "relay");
}

#[test]
fn relay_only_configured_on_the_camera_hides_its_addresses() {
    let world = World::new(&Setup {
        direct_allowed: true,
        webrtc: "ice_transport_policy = \"relay\"",
        ..Setup::default()
    });
    let result = world.browser("", "nat-camera-relay-only").run(|_| {});
    assert_plays(&world, &result);
    assert_eq!(types(&result).1, "relay", "{}", world.explain(&result));
    assert!(
        world.cam.log_text().contains("0 host, 0 srflx, 1 relay"),
        "{}",
        world.explain(&result)
    );
}

/// Plays nothing for 15 s; the camera logs `log_line` and the viewer got `bye` `reason`.
fn assert_refused(world: &World, name: &str, log_line: &str, reason: &str) {
    let result = world
        .browser("", name)
        .timeout(Duration::from_secs(15))
        .run(|_| {});
    assert_eq!(result["stats"]["framesDecoded"].as_u64().unwrap_or(0), 0);
    assert!(
        world.cam.log_text().contains(log_line),
        "{}",
        world.explain(&result)
    );
    assert!(
        result["log"]
            .to_string()
            .contains(&format!("camera ended the session: {reason}")),
        "{}",
        world.explain(&result)
    );
}

#[test]
fn wrong_secret_fails_with_a_log_line_and_a_bye() {
    let world = World::new(&Setup {
        camera_secret: "not-the-secret",
        ..Setup::default()
    });
    assert_refused(
        &world,
        "nat-wrong-secret",
        "no relay candidate from the TURN server",
        "timeout",
    );
}

#[test]
fn expired_credentials_on_a_relay_only_camera_end_the_session_at_once() {
    // coturn's clock runs 2 h ahead: every credential minted now (1 h TTL) has expired.
    let world = World::new(&Setup {
        webrtc: "ice_transport_policy = \"relay\"",
        coturn_clock_ahead: Some(Duration::from_secs(7200)),
        ..Setup::default()
    });
    assert_refused(
        &world,
        "nat-expired",
        "relay-only camera got no TURN allocation",
        "failed",
    );
}

#[test]
fn ice_restart_keeps_the_session_when_the_viewer_changes_address() {
    let mut world = World::new(&Setup::default());
    let mut net_moved = false;
    let viewer = world.net.viewer.clone();
    let relay_ip = world.net.relay_ip.clone();
    let result = Browser::new(
        &viewer,
        &page_file_url(&format!(
            "broker=ws://{relay_ip}:9001&camera=porch{}",
            invitation_fragment()
        )),
        "nat-ice-restart",
    )
    .hold(Duration::from_secs(25))
    .run(|_| {
        world.net.move_viewer().unwrap();
        net_moved = true;
    });
    assert!(net_moved, "{}", world.explain(&result));
    assert_plays(&world, &result);
    let before = result["playingStats"]["framesDecoded"]
        .as_u64()
        .unwrap_or(0);
    let after = result["stats"]["framesDecoded"].as_u64().unwrap_or(0);
    assert!(
        result["stats"]["iceRestarts"].as_u64().unwrap_or(0) >= 1,
        "{}",
        world.explain(&result)
    );
    // Still decoding at the end: well over 100 frames (≈4 s at 25–30 fps) after the
    // move, in the same session.
    assert!(after > before + 100, "{}", world.explain(&result));
    assert_eq!(
        result["stats"]["session"], result["playingStats"]["session"],
        "same session"
    );
    assert_eq!(result["stats"]["connectionState"], "connected");
    let log = world.cam.log_text();
    assert_eq!(log.matches("new session").count(), 1, "{log}");
    assert!(log.contains("renegotiation offer"), "{log}");
}

/// Offer → first decoded frame in Chromium per path, 10 fresh browsers each:
/// `cargo test --release --test nat first_frame_by_path -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run on demand"]
fn first_frame_by_path() {
    let paths: [(&str, Setup<'_>, &str); 4] = [
        (
            "direct (host/host udp)",
            Setup {
                direct_allowed: true,
                ..Setup::default()
            },
            "",
        ),
        ("relay, TURN over UDP", Setup::default(), "&relay=1"),
        (
            "relay, TURN over TCP",
            Setup::viewer_without_udp(TURN_TCP),
            "&relay=1",
        ),
        (
            "relay, TURN over TLS",
            Setup::viewer_without_udp_tls(),
            "&relay=1",
        ),
    ];
    println!(
        "| path | runs | selected pair | min | p50 | p95 | max (ms) |\n|---|---|---|---|---|---|---|"
    );
    for (name, setup, query) in paths {
        let world = World::new(&setup);
        let mut ms = Vec::new();
        let mut pairs = std::collections::BTreeSet::new();
        for i in 0..10 {
            let result = world
                .browser(query, &format!("bench-path-{i}"))
                .accept_any_cert()
                .run(|_| {});
            assert_plays(&world, &result);
            pairs.insert(pair(&result).to_owned());
            ms.push(
                result["stats"]["firstFrameMs"]
                    .as_f64()
                    .expect("first frame timed"),
            );
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            ms.len(),
            pairs.into_iter().collect::<Vec<_>>().join(", "),
            ms[0],
            q(0.5),
            q(0.95),
            ms[ms.len() - 1]
        );
    }
}
