//! Invite mode against the real binary over a real Mosquitto with no ACL
//! (`shared/design/access-v1.md`): an invited viewer watches; strangers, forgers,
//! expired and revoked invitations and replays get `unauthorized` and take nothing;
//! a third client's forged answer, config and bye do not disturb the viewer.

mod common;

use common::viewer::{Endpoint, Invitation, Signal, Viewer, online_camera_from, wait_status};
use common::{Mosquitto, camera_config};
use edgecam::access::keys::Secret;
use serde_json::{Value, json};
use std::time::Duration;

/// A valid browser-style H.264 offer (it never connects: enough to take a slot).
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
a=setup:actpass\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const SECRET: [u8; 32] = [5; 32];

/// The invite-mode config of the test camera on `port`, revoking `revoked`.
fn invite_config(dir: &std::path::Path, port: u16, revoked: &str) -> String {
    let secret_file = dir.join("access-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    camera_config("cam", port, "").replace(
        "[access]\nmode = \"open\"\n",
        &format!(
            "[access]\nmode = \"invite\"\nsecret_file = \"{}\"\nrevoked = [{revoked}]\n",
            secret_file.display()
        ),
    )
}

async fn invite_camera(dir: &std::path::Path) -> (common::Mosquitto, common::Edgecam) {
    online_camera_from("cam", |port| invite_config(dir, port, "\"mallory\"")).await
}

fn invitation(name: &str, exp: u64) -> Invitation {
    Invitation::mint(&Secret::from_bytes(SECRET), "cam", name, exp)
}

async fn viewers(port: u16) -> u64 {
    wait_status(port, "cam", Duration::from_secs(5), |_| true).await["viewers"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_invited_viewers_get_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, cam) = invite_camera(dir.path()).await;
    let status = wait_status(broker.port, "cam", Duration::from_secs(5), |_| true).await;
    assert_eq!(status["auth"], json!(["signed-v1"]), "{status}");

    // The invited viewer watches, with every camera message signed.
    let alice = Viewer::join(
        Endpoint::new(broker.port, "cam", "alice-1").invited(invitation("alice", now_s() + 3600)),
        true,
    )
    .await;
    let (ok, r) = alice
        .wait_until(Duration::from_secs(20), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "the invited viewer does not play: {r:?}");
    assert!(
        r.rejected.is_empty(),
        "camera messages failed to verify: {:?}",
        r.rejected
    );
    assert_eq!(viewers(broker.port).await, 1);

    // Everybody else: no answer, no config, no slot.
    let cases: Vec<(&str, Option<Invitation>)> = vec![
        ("stranger", None),
        (
            "wrong-key",
            Some(Invitation::mint(
                &Secret::from_bytes([6; 32]),
                "cam",
                "eve",
                now_s() + 3600,
            )),
        ),
        ("expired", Some(invitation("bob", now_s() - 10))),
        ("revoked", Some(invitation("mallory", now_s() + 3600))),
    ];
    for (session, inv) in cases {
        let mut ep = Endpoint::new(broker.port, "cam", session);
        ep.invitation = inv;
        let mut s = Signal::open(&ep, &[]).await.unwrap();
        s.send(&json!({"type": "config-request"})).await;
        let e = s.expect_error("unauthorized").await;
        s.send(&json!({"type": "offer", "sdp": OFFER})).await;
        s.expect_error("unauthorized").await;
        s.expect_silence(Duration::from_millis(500)).await;
        println!("{session}: {}", e["message"]);
    }
    assert_eq!(
        viewers(broker.port).await,
        1,
        "a refused request took a slot"
    );
    let log = cam.log_text();
    assert!(
        log.contains("unauthorized request on session"),
        "no log line"
    );
    assert!(!log.contains(&"05".repeat(8)), "the secret in the log");
    drop(alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_requests_cannot_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _cam) = invite_camera(dir.path()).await;
    let bob = invitation("bob", now_s() + 3600);
    let ep = Endpoint::new(broker.port, "cam", "bob-1").invited(bob.clone());
    let mut s = Signal::open(&ep, &[]).await.unwrap();
    // What an eavesdropper on `#` captures: bob's signed offer.
    let captured = ep.wrap(&json!({"type": "offer", "sdp": OFFER}));
    s.publish_raw(captured.to_string()).await;
    let answer = s
        .recv_on("to-viewer", Duration::from_secs(10))
        .await
        .expect("a reply");
    let opened = ep.unwrap_reply(answer.clone()).unwrap_or(Value::Null);
    assert_eq!(opened["type"], "answer", "{answer}");
    assert_eq!(viewers(broker.port).await, 1);
    s.send(&json!({"type": "bye"})).await;
    wait_status(broker.port, "cam", Duration::from_secs(5), |st| {
        st["viewers"] == 0
    })
    .await;

    // Replayed on the same session after it ended: refused, no slot. (First drop the
    // camera's candidates still queued for the ended session.)
    while s
        .recv_on("to-viewer", Duration::from_millis(300))
        .await
        .is_some()
    {}
    s.publish_raw(captured.to_string()).await;
    s.expect_error("unauthorized").await;
    // Replayed on a new session id: the MAC binds the session, so refused too.
    let mut other = Signal::connect(broker.port, "cam", "eve-1", &[]).await;
    other.publish_raw(captured.to_string()).await;
    other.expect_error("unauthorized").await;
    assert_eq!(viewers(broker.port).await, 0, "a replay took a slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_camera_messages_do_not_disturb_an_invited_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _cam) = invite_camera(dir.path()).await;
    let alice = Viewer::join(
        Endpoint::new(broker.port, "cam", "alice-2").invited(invitation("alice", now_s() + 3600)),
        true,
    )
    .await;
    let (ok, _) = alice
        .wait_until(Duration::from_secs(20), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "the invited viewer does not play");
    let before = alice.report().decoded_video;

    // A third client on alice's to-viewer topic: a plain answer, a config moving her
    // to an attacker's TURN with relay policy, a bye, and an envelope with a bad MAC.
    let mut attacker = Signal::connect(broker.port, "cam", "attacker", &[]).await;
    let topic = "edgecam/cam/session/alice-2/to-viewer";
    for forged in [
        json!({"type": "answer", "sdp": OFFER}),
        json!({"type": "config", "iceServers": [{"urls": ["turn:203.0.113.1:3478"], "username": "x", "credential": "y"}], "iceTransportPolicy": "relay"}),
        json!({"type": "bye", "reason": "kicked"}),
        json!({"type": "signed", "v": 1, "name": "alice", "exp": now_s() + 3600, "msg": "{\"type\":\"bye\",\"reason\":\"kicked\"}", "mac": "AAAA"}),
    ] {
        attacker.publish_to(topic, forged.to_string()).await;
    }
    let (ok, r) = alice
        .wait_until(Duration::from_secs(10), |r| {
            r.rejected.len() >= 4 && r.decoded_video >= before + 30
        })
        .await;
    assert!(
        ok,
        "forgeries were not all rejected, or decoding stopped: {r:?}"
    );
    assert!(
        r.ended.is_empty(),
        "a forged bye ended the session: {:?}",
        r.ended
    );
    assert_eq!(r.state.as_deref(), Some("connected"));
    let _ = attacker.recv(Duration::from_millis(10)).await;
}

/// The Mosquitto ACL template in `docs/mosquitto/edgecam.acl`, on a broker that refuses
/// anonymous clients: the camera and an invited viewer work; another viewer account
/// can neither publish a status or a `to-viewer` message nor read another session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mosquitto_acl_template_confines_viewer_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let exp = now_s() + 3600;
    let alice = invitation("alice", exp);
    let token = alice.key.token("cam", "alice", exp);
    let pw = dir.path().join("passwd");
    for (i, (user, pass)) in [
        ("cam", "campw"),
        ("alice", token.as_str()),
        ("eve", "evepw"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg(&pw)
            .args([user, pass])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mosquitto_passwd");
    }
    let acl = dir.path().join("edgecam.acl");
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mosquitto/edgecam.acl"),
    )
    .unwrap();
    std::fs::write(&acl, template.replace("porch", "cam")).unwrap();
    let broker = Mosquitto::start_locked(&pw, &acl);
    let secret_file = dir.path().join("access-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let config = camera_config("cam", broker.port, "")
        .replace(
            "[access]\nmode = \"open\"\n",
            &format!(
                "[access]\nmode = \"invite\"\nsecret_file = \"{}\"\n",
                secret_file.display()
            ),
        )
        .replace(
            "[signaling]\n",
            "[signaling]\nusername = \"cam\"\npassword = \"campw\"\n",
        );
    let _cam = common::Edgecam::start(&config);
    let login = |user: &str, pass: &str| Some((user.to_owned(), pass.to_owned()));
    let status_of = |session: &str, who: Option<(String, String)>| {
        let mut ep = Endpoint::new(broker.port, "cam", session);
        ep.login = who;
        ep
    };
    // Viewers read statuses: the camera is online.
    let mut watch = Signal::open(
        &status_of("w-1", login("alice", &token)),
        &["edgecam/cam/status"],
    )
    .await
    .unwrap();
    let mut online = false;
    for _ in 0..30 {
        match watch.recv_on("/status", Duration::from_secs(1)).await {
            Some(v) if v["state"] == "online" => {
                online = true;
                break;
            }
            _ => {}
        }
    }
    assert!(online, "the camera's status through the ACL");
    // The invited viewer plays through the locked broker.
    let viewer = Viewer::join(
        Endpoint::new(broker.port, "cam", "alice-1").invited(alice),
        true,
    )
    .await;
    let (ok, r) = viewer
        .wait_until(Duration::from_secs(20), |r| r.decoded_video >= 10)
        .await;
    assert!(ok, "the invited viewer does not play: {r:?}");

    // Eve, a viewer account: subscribes to alice's session, publishes a status and a
    // message to alice. A camera-role monitor sees neither publish, eve reads nothing
    // the camera role sends alice, and the retained status is the camera's.
    let mut monitor = Signal::open(
        &status_of("m-1", login("cam", "campw")),
        &["edgecam/cam/session/+/to-viewer"],
    )
    .await
    .unwrap();
    let mut eve = Signal::open(
        &status_of("eve-1", login("eve", "evepw")),
        &["edgecam/cam/session/alice-1/to-viewer"],
    )
    .await
    .unwrap();
    // Drain what the monitor sees of alice's own session first.
    while monitor.recv(Duration::from_millis(300)).await.is_some() {}
    eve.publish_retained_to(
        "edgecam/cam/status",
        r#"{"protocol":1,"state":"offline","camera":"cam"}"#,
    )
    .await;
    eve.publish_to(
        "edgecam/cam/session/alice-1/to-viewer",
        r#"{"type":"bye","reason":"kicked"}"#,
    )
    .await;
    assert!(
        monitor
            .recv_on("to-viewer", Duration::from_secs(1))
            .await
            .is_none(),
        "eve's publish to alice got through"
    );
    monitor
        .publish_to(
            "edgecam/cam/session/alice-1/to-viewer",
            r#"{"type":"ping-from-camera-role"}"#,
        )
        .await;
    assert!(
        monitor
            .recv_on("to-viewer", Duration::from_secs(2))
            .await
            .is_some(),
        "the camera role's own publish arrives (the monitor works)"
    );
    assert!(
        eve.recv(Duration::from_secs(1)).await.is_none(),
        "eve read alice's session"
    );
    let mut fresh = Signal::open(
        &status_of("w-2", login("alice", &token)),
        &["edgecam/cam/status"],
    )
    .await
    .unwrap();
    let status = fresh
        .recv_on("/status", Duration::from_secs(5))
        .await
        .expect("retained status");
    assert_eq!(
        status["state"], "online",
        "eve replaced the camera's status: {status}"
    );
    let r = viewer.report();
    assert!(r.ended.is_empty(), "{:?}", r.ended);
}

/// Attack 4: 200 unsigned offers from rotating session ids within 2 s take no slot and
/// do not hold up an invited viewer: its time to first frame stays within twice the
/// figure without the flood (with a 250 ms floor, so scheduling noise on a loaded CI
/// machine is not read as an effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_flood_from_strangers_does_not_hold_up_an_invited_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, cam) = invite_camera(dir.path()).await;
    let inv = invitation("alice", now_s() + 3600);
    let ttff = |session: &'static str| {
        let inv = inv.clone();
        let port = broker.port;
        async move {
            let v = Viewer::join(Endpoint::new(port, "cam", session).invited(inv), false).await;
            let (ok, r) = v
                .wait_until(Duration::from_secs(20), |r| {
                    r.first_frame_after_offer.is_some()
                })
                .await;
            assert!(ok, "{session} got no frame: {r:?}");
            v.bye().await;
            r.first_frame_after_offer.unwrap()
        }
    };
    let baseline = ttff("alice-quiet").await;
    wait_status(broker.port, "cam", Duration::from_secs(10), |s| {
        s["viewers"] == 0
    })
    .await;

    let flood = Signal::connect(broker.port, "cam", "flooder", &[]).await;
    let started = std::time::Instant::now();
    for i in 0..200 {
        flood
            .publish_to(
                &format!("edgecam/cam/session/flood-{i}/to-camera"),
                json!({"type": "offer", "sdp": OFFER}).to_string(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(9)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the flood took too long to send"
    );
    let flooded = ttff("alice-flooded").await;
    let bound = baseline.max(Duration::from_millis(250)) * 2;
    println!(
        "time to first frame: {baseline:?} quiet, {flooded:?} right after 200 unsigned offers"
    );
    assert!(
        flooded <= bound,
        "{flooded:?} after the flood, {baseline:?} without"
    );
    let status = wait_status(broker.port, "cam", Duration::from_secs(5), |_| true).await;
    assert!(
        status["viewers"].as_u64() <= Some(1),
        "the flood took slots: {status}"
    );
    assert!(
        !cam.log_text().contains("new session flood-"),
        "a flood offer made a session"
    );
}

/// Revocation by name takes effect on reload: the revoked viewer's live session ends
/// with `bye`, and its invitation is refused from then on; another viewer comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_viewer_is_ended_on_reload_and_refused_after() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, cam) = invite_camera(dir.path()).await;
    let exp = now_s() + 3600;
    let carol = Viewer::join(
        Endpoint::new(broker.port, "cam", "carol-1").invited(invitation("carol", exp)),
        false,
    )
    .await;
    let (ok, _) = carol
        .wait_until(Duration::from_secs(20), |r| r.video_frames >= 10)
        .await;
    assert!(ok, "carol does not play");
    cam.rewrite_config(&invite_config(
        dir.path(),
        broker.port,
        "\"mallory\", \"carol\"",
    ));
    cam.hangup();
    let (ended, r) = carol
        .wait_until(Duration::from_secs(20), |r| !r.ended.is_empty())
        .await;
    assert!(ended, "carol's session was not ended by the reload: {r:?}");
    assert_eq!(r.ended[0]["type"], "bye", "{:?}", r.ended);
    wait_status(broker.port, "cam", Duration::from_secs(20), |s| {
        s["state"] == "online" && s["viewers"] == 0
    })
    .await;
    let mut again = Signal::open(
        &Endpoint::new(broker.port, "cam", "carol-2").invited(invitation("carol", exp)),
        &[],
    )
    .await
    .unwrap();
    again.send(&json!({"type": "offer", "sdp": OFFER})).await;
    let e = again.expect_error("unauthorized").await;
    assert_eq!(e["message"], "invitation revoked");
    let dave = Viewer::join(
        Endpoint::new(broker.port, "cam", "dave-1").invited(invitation("dave", exp)),
        false,
    )
    .await;
    let (ok, _) = dave
        .wait_until(Duration::from_secs(20), |r| r.video_frames >= 10)
        .await;
    assert!(ok, "an unrevoked viewer does not play after the reload");
}
