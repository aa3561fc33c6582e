//! Unit tests of `signaling::protocol`.

use super::*;

fn sid(s: &str) -> SessionId {
    Id::parse(s).unwrap()
}

#[test]
fn ids_follow_the_contract_pattern() {
    assert!(Id::parse("abc_DEF-123").is_ok());
    assert!(Id::parse(&"a".repeat(64)).is_ok());
    assert!(Id::parse(&"a".repeat(65)).is_err());
    assert!(Id::parse("").is_err());
    assert!(Id::parse("a/b").is_err());
    assert!(Id::parse("a+").is_err());
    assert!(Id::parse("é").is_err());
}

#[test]
fn parses_each_viewer_message() {
    assert_eq!(
        parse_to_camera(br#"{"type":"config-request"}"#),
        Ok(ToCamera::ConfigRequest)
    );
    assert_eq!(parse_to_camera(br#"{"type":"bye"}"#), Ok(ToCamera::Bye));
    assert_eq!(
        parse_to_camera(br#"{"type":"offer","sdp":"v=0\r\n"}"#),
        Ok(ToCamera::Offer {
            sdp: "v=0\r\n".into()
        })
    );
    assert_eq!(
        parse_to_camera(
            br#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#
        ),
        Ok(ToCamera::Candidate(Some(CandidateInit {
            candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: Some("abcd".into()),
        })))
    );
    assert_eq!(
        parse_to_camera(br#"{"type":"candidate","candidate":null}"#),
        Ok(ToCamera::Candidate(None))
    );
    assert_eq!(
        parse_to_camera(br#"{"type":"candidate","candidate":{"candidate":"","sdpMid":"0"}}"#),
        Ok(ToCamera::Candidate(None))
    );
}

#[test]
fn rejects_bad_requests_with_a_reason() {
    assert!(matches!(
        parse_to_camera(b"not json"),
        Err(ProtocolError::NotJson(_))
    ));
    assert_eq!(parse_to_camera(b"[1]"), Err(ProtocolError::NotObject));
    assert_eq!(parse_to_camera(b"{}"), Err(ProtocolError::NoType));
    assert_eq!(
        parse_to_camera(br#"{"type":7}"#),
        Err(ProtocolError::NoType)
    );
    assert_eq!(
        parse_to_camera(br#"{"type":"hello"}"#),
        Err(ProtocolError::UnknownType("hello".into()))
    );
    assert!(matches!(
        parse_to_camera(br#"{"type":"offer"}"#),
        Err(ProtocolError::BadField { field: "sdp", .. })
    ));
    assert!(matches!(
        parse_to_camera(br#"{"type":"offer","sdp":5}"#),
        Err(ProtocolError::BadField { field: "sdp", .. })
    ));
    assert!(matches!(
        parse_to_camera(br#"{"type":"candidate"}"#),
        Err(ProtocolError::BadField {
            field: "candidate",
            ..
        })
    ));
    assert!(matches!(
        parse_to_camera(br#"{"type":"candidate","candidate":"x"}"#),
        Err(ProtocolError::BadField {
            field: "candidate",
            ..
        })
    ));
    let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        parse_to_camera(&big),
        Err(ProtocolError::TooLarge(MAX_PAYLOAD_BYTES + 1))
    );
}

#[test]
fn serialises_camera_messages_as_golden_json() {
    let golden = [
        (
            ToViewer::Answer { sdp: "v=0".into() },
            r#"{"type":"answer","sdp":"v=0"}"#,
        ),
        (
            ToViewer::Candidate { candidate: None },
            r#"{"type":"candidate","candidate":null}"#,
        ),
        (
            ToViewer::Candidate {
                candidate: Some(CandidateInit {
                    candidate: "candidate:1 1 udp 2 10.0.0.1 9 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                }),
            },
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2 10.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        ),
        (
            ToViewer::error(ErrorCode::UnknownSession, "no such session"),
            r#"{"type":"error","code":"unknown-session","message":"no such session"}"#,
        ),
        (
            ToViewer::Bye {
                reason: ByeReason::Timeout,
            },
            r#"{"type":"bye","reason":"timeout"}"#,
        ),
        (
            ToViewer::Config {
                ice_servers: vec![IceServer {
                    urls: vec!["turn:127.0.0.1:3478".into()],
                    username: Some("1763700000:s1".into()),
                    credential: Some("c2VjcmV0".into()),
                }],
                ice_transport_policy: "all".into(),
                expires: Some(1763700000),
            },
            r#"{"type":"config","iceServers":[{"urls":["turn:127.0.0.1:3478"],"username":"1763700000:s1","credential":"c2VjcmV0"}],"iceTransportPolicy":"all","expires":1763700000}"#,
        ),
    ];
    for (msg, json) in golden {
        assert_eq!(String::from_utf8(msg.to_json()).unwrap(), json);
    }
}

#[test]
fn status_matches_the_contract_examples() {
    let online = Status {
        protocol: 1,
        state: "online".into(),
        camera: "porch".into(),
        name: Some("Porch".into()),
        version: Some("0.3.0".into()),
        video: Some(VideoInfo {
            codec: "H264".into(),
            width: 1280,
            height: 720,
            fps: 30,
        }),
        audio: Some(None),
        viewers: Some(2),
        max_viewers: Some(10),
        turn: None,
        auth: None,
        extensions: None,
    };
    assert_eq!(
        String::from_utf8(online.to_json()).unwrap(),
        r#"{"protocol":1,"state":"online","camera":"porch","name":"Porch","version":"0.3.0","video":{"codec":"H264","width":1280,"height":720,"fps":30},"audio":null,"viewers":2,"maxViewers":10}"#
    );
    assert_eq!(
        String::from_utf8(Status::offline(&sid("porch")).to_json()).unwrap(),
        r#"{"protocol":1,"state":"offline","camera":"porch"}"#
    );
}

#[test]
fn topics_round_trip_and_reject_foreign_or_invalid_sessions() {
    let t = Topics::new("edgecam", sid("porch"));
    assert_eq!(t.status(), "edgecam/porch/status");
    assert_eq!(t.to_camera_filter(), "edgecam/porch/session/+/to-camera");
    assert_eq!(
        t.to_viewer(&sid("s1")),
        "edgecam/porch/session/s1/to-viewer"
    );
    assert_eq!(
        t.parse_to_camera("edgecam/porch/session/s1/to-camera"),
        Some(Ok(sid("s1")))
    );
    assert!(matches!(
        t.parse_to_camera("edgecam/porch/session/bad.id/to-camera"),
        Some(Err(ProtocolError::InvalidId(_)))
    ));
    assert_eq!(
        t.parse_to_camera("edgecam/other/session/s1/to-camera"),
        None
    );
    assert_eq!(t.parse_to_camera("edgecam/porch/status"), None);
}
