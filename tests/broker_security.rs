//! Broker transports and credentials: edgecam reaching Mosquitto over TLS (`mqtts://`
//! with a CA file the test generates) with username and password, and the embedded
//! broker refusing clients without the configured credentials.

mod common;

use common::viewer::{Viewer, wait_status};
use common::{Edgecam, free_port, wait_port};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// A CA and a server certificate for 127.0.0.1, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edgecam test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

struct Broker(std::process::Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects and returns the CONNACK code (or a connection error as `None`).
async fn connack(port: u16, creds: Option<(&str, &str)>) -> Option<ConnectReturnCode> {
    connack_opts(
        MqttOptions::new(format!("probe{}", rand::random::<u16>()), "127.0.0.1", port),
        creds,
    )
    .await
}

/// As [`connack`], over MQTT-over-WebSocket (as browsers connect) to `ws://127.0.0.1:port`.
async fn connack_ws(port: u16, creds: Option<(&str, &str)>) -> Option<ConnectReturnCode> {
    let mut opts = MqttOptions::new(
        format!("probe{}", rand::random::<u16>()),
        format!("ws://127.0.0.1:{port}/mqtt"),
        port,
    );
    opts.set_transport(rumqttc::Transport::Ws);
    connack_opts(opts, creds).await
}

async fn connack_opts(
    mut opts: MqttOptions,
    creds: Option<(&str, &str)>,
) -> Option<ConnectReturnCode> {
    if let Some((u, p)) = creds {
        opts.set_credentials(u, p);
    }
    let (_client, mut el) = AsyncClient::new(opts, 10);
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Some(a.code),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Some(code),
                Err(_) => return None,
            }
        }
    })
    .await;
    res.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_signals_over_tls_with_ca_file_and_password() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let pwfile = dir.path().join("passwd");
    assert!(
        Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&pwfile)
            .args(["cam", "s3cret"])
            .status()
            .unwrap()
            .success()
    );
    let (plain, tls) = (free_port(), free_port());
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\nuser root\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {tls} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             log_dest stderr\n",
            pw = pwfile.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let _broker = Broker(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_port(tls, Duration::from_secs(10)) && wait_port(plain, Duration::from_secs(10)));

    std::fs::write(dir.path().join("mqtt-password"), "s3cret\n").unwrap();
    let config = format!(
        "[camera]\nid = \"tlscam\"\n[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n[audio]\nsource = \"none\"\n[access]\nmode = \"open\"\n\
         [signaling]\nbroker = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{d}/ca.pem\"\nusername = \"cam\"\npassword_file = \"{d}/mqtt-password\"\n\
         [http]\nenabled = false\n[webrtc]\nudp_bind = [\"127.0.0.1\"]\n",
        d = dir.path().display()
    );
    let _cam = Edgecam::start(&config);
    // The status is retained across listeners: read it, and watch, over the plain one.
    let status = wait_status(plain, "tlscam", Duration::from_secs(15), |s| {
        s["state"] == "online"
    })
    .await;
    assert_eq!(
        status["audio"],
        serde_json::Value::Null,
        "no microphone → audio null"
    );
    let viewer = Viewer::connect(plain, "tlscam", "v1").await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(15), |r| r.decoded_video >= 5)
        .await;
    assert!(ok, "viewer plays a camera that signals over TLS: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_requires_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "viewer-pass\n").unwrap();
    let (tcp, ws) = (free_port(), free_port());
    let config = format!(
        "[camera]\nid = \"locked\"\n[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n[audio]\nsource = \"none\"\n[access]\nmode = \"open\"\n\
         [broker]\nlisten = \"127.0.0.1:{tcp}\"\nws_listen = \"127.0.0.1:{ws}\"\nusername = \"viewer\"\npassword_file = \"{}\"\n\
         [http]\nenabled = false\n[webrtc]\nudp_bind = [\"127.0.0.1\"]\n",
        dir.path().join("pw").display()
    );
    let cam = Edgecam::start(&config);
    assert!(
        wait_port(tcp, Duration::from_secs(15)),
        "embedded broker listens"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let anonymous = connack(tcp, None).await;
    assert_ne!(
        anonymous,
        Some(ConnectReturnCode::Success),
        "anonymous client refused"
    );
    let wrong = connack(tcp, Some(("viewer", "nope"))).await;
    assert_ne!(
        wrong,
        Some(ConnectReturnCode::Success),
        "wrong password refused"
    );
    let right = connack(tcp, Some(("viewer", "viewer-pass"))).await;
    assert_eq!(
        right,
        Some(ConnectReturnCode::Success),
        "right password accepted"
    );
    assert!(
        cam.log_text().contains("signaling online"),
        "the camera's own client got in: {}",
        cam.log_text()
    );
}

/// Invite mode: the embedded broker admits the camera's own client and invited viewers
/// (name + token), and nobody else, over TCP and WebSocket; an invited viewer plays
/// through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_in_invite_mode_admits_only_invited_viewers() {
    use common::viewer::{Endpoint, Invitation};
    use edgecam::access::keys::Secret;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), [4u8; 32]).unwrap();
    let (tcp, ws) = (free_port(), free_port());
    let config = format!(
        "[camera]\nid = \"gate\"\n[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n[audio]\nsource = \"none\"\n\
         [broker]\nlisten = \"127.0.0.1:{tcp}\"\nws_listen = \"127.0.0.1:{ws}\"\n\
         [http]\nenabled = false\n[webrtc]\nudp_bind = [\"127.0.0.1\"]\n\
         [access]\nmode = \"invite\"\nsecret_file = \"{}\"\nrevoked = [\"mallory\"]\n",
        dir.path().join("secret").display()
    );
    let cam = Edgecam::start(&config);
    assert!(
        wait_port(ws, Duration::from_secs(15)),
        "embedded broker listens"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mint = |secret: [u8; 32], camera: &str, name: &str, exp: u64| {
        Invitation::mint(&Secret::from_bytes(secret), camera, name, exp)
    };
    let alice = mint([4; 32], "gate", "alice", exp);
    let token = alice.key.token("gate", "alice", exp);
    let other_camera = mint([4; 32], "garage", "alice", exp);
    let other_token = other_camera.key.token("garage", "alice", exp);
    let mallory = mint([4; 32], "gate", "mallory", exp);
    let mallory_token = mallory.key.token("gate", "mallory", exp);
    for (what, creds) in [
        ("anonymous", None),
        (
            "a token for another camera",
            Some(("alice", other_token.as_str())),
        ),
        ("a token under another name", Some(("bob", token.as_str()))),
        ("a revoked name", Some(("mallory", mallory_token.as_str()))),
        ("a guessed camera login", Some(("edgecam-camera", "x"))),
    ] {
        assert_ne!(
            connack_ws(ws, creds).await,
            Some(ConnectReturnCode::Success),
            "WebSocket, {what}"
        );
        assert_ne!(
            connack(tcp, creds).await,
            Some(ConnectReturnCode::Success),
            "TCP, {what}"
        );
    }
    assert_eq!(
        connack_ws(ws, Some(("alice", &token))).await,
        Some(ConnectReturnCode::Success),
        "the invited viewer over WebSocket"
    );
    // The camera's own client is in, and an invited viewer plays through this broker.
    assert!(
        cam.log_text().contains("signaling online"),
        "{}",
        cam.log_text()
    );
    let viewer = Viewer::join(Endpoint::new(tcp, "gate", "alice-1").invited(alice), true).await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(20), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "the invited viewer does not play: {r:?}");
    assert!(
        cam.log_text()
            .contains("admits the camera and invited viewers")
    );
}
