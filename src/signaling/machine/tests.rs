//! Unit tests of `signaling::machine`.

use super::*;
use crate::signaling::protocol::Id;

fn sid(s: &str) -> SessionId {
    Id::parse(s).unwrap()
}

fn offer(n: u32) -> Vec<u8> {
    format!(r#"{{"type":"offer","sdp":"v=0 offer {n}"}}"#).into_bytes()
}

fn drain(m: &mut Machine) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn sent(out: &[Output]) -> Vec<(String, ToViewer)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { session, msg } => Some((session.to_string(), msg.clone())),
            _ => None,
        })
        .collect()
}

/// The peer layer answers `session`'s offer: it passed validation.
fn answer(m: &mut Machine, now: Instant, session: &str) {
    m.handle_peer(
        now,
        sid(session),
        PeerEvent::Answer(format!("answer {session}")),
    );
}

fn machine(t0: Instant) -> Machine {
    Machine::new(
        Limits {
            max_viewers: 2,
            ..Limits::default()
        },
        t0,
    )
}

#[test]
fn offer_opens_a_session_and_duplicate_delivery_is_ignored() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    let out = drain(&mut m);
    assert_eq!(
        out,
        vec![
            Output::Status { viewers: 1 },
            Output::Peer(PeerCommand::Offer {
                session: sid("a"),
                sdp: "v=0 offer 1".into()
            }),
        ]
    );
    // QoS 1 redelivery of the same offer: nothing happens.
    m.handle_message(t0, sid("a"), &offer(1));
    assert!(drain(&mut m).is_empty());
    // A different SDP on a live session is a renegotiation, not a new viewer.
    m.handle_message(t0, sid("a"), &offer(2));
    assert_eq!(
        drain(&mut m),
        vec![Output::Peer(PeerCommand::Offer {
            session: sid("a"),
            sdp: "v=0 offer 2".into()
        })]
    );
    assert_eq!(m.viewers(), 1);
}

#[test]
fn candidates_go_to_the_peer_in_order_or_get_unknown_session() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    let cand = br#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}"#;
    // Before the offer (out of order): the session does not exist.
    m.handle_message(t0, sid("a"), cand);
    let out = drain(&mut m);
    assert!(matches!(
        &sent(&out)[..],
        [(s, ToViewer::Error { code: ErrorCode::UnknownSession, .. })] if s == "a"
    ));
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_message(t0, sid("a"), cand);
    m.handle_message(t0, sid("a"), br#"{"type":"candidate","candidate":null}"#);
    let peer: Vec<_> = drain(&mut m)
        .into_iter()
        .filter_map(|o| match o {
            Output::Peer(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(matches!(peer[0], PeerCommand::Offer { .. }));
    assert!(matches!(
        &peer[1],
        PeerCommand::AddCandidate {
            candidate: Some(_),
            ..
        }
    ));
    assert!(matches!(
        &peer[2],
        PeerCommand::AddCandidate {
            candidate: None,
            ..
        }
    ));
}

#[test]
fn unconnected_session_times_out_after_30_s_with_bye() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    m.handle_timeout(t0 + Duration::from_secs(29));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(t0 + Duration::from_secs(30));
    let out = drain(&mut m);
    assert!(out.contains(&Output::Peer(PeerCommand::Close { session: sid("a") })));
    assert_eq!(
        sent(&out),
        vec![(
            "a".into(),
            ToViewer::Bye {
                reason: ByeReason::Timeout
            }
        )]
    );
    assert_eq!(m.viewers(), 0);
}

#[test]
fn connected_session_has_no_deadline_until_it_renegotiates() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_peer(t0, sid("a"), PeerEvent::Connected);
    drain(&mut m);
    m.handle_timeout(t0 + Duration::from_secs(120));
    assert!(sent(&drain(&mut m)).is_empty());
    // An ICE restart offer arms the 30 s rule again.
    let t1 = t0 + Duration::from_secs(200);
    m.handle_message(t1, sid("a"), &offer(2));
    m.handle_timeout(t1 + Duration::from_secs(31));
    let out = sent(&drain(&mut m));
    assert_eq!(
        out,
        vec![(
            "a".into(),
            ToViewer::Bye {
                reason: ByeReason::Timeout
            }
        )]
    );
}

#[test]
fn viewer_limit_answers_busy_and_keeps_existing_sessions() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_message(t0, sid("b"), &offer(1));
    answer(&mut m, t0, "a");
    answer(&mut m, t0, "b");
    drain(&mut m);
    m.handle_message(t0, sid("c"), &offer(1));
    m.handle_message(t0, sid("c"), br#"{"type":"config-request"}"#);
    let out = sent(&drain(&mut m));
    assert!(matches!(
        &out[..],
        [
            (
                _,
                ToViewer::Error {
                    code: ErrorCode::Busy,
                    ..
                }
            ),
            (
                _,
                ToViewer::Error {
                    code: ErrorCode::Busy,
                    ..
                }
            )
        ]
    ));
    assert_eq!(m.viewers(), 2);
    assert!(m.has_session(&sid("a")) && m.has_session(&sid("b")));
}

#[test]
fn minted_credentials_are_refreshed_on_live_sessions_only() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Limits {
            config_refresh_after: Some(Duration::from_secs(3300)),
            ..Limits::default()
        },
        t0,
    );
    let config = |s: &str| Output::SendConfig { session: sid(s) };
    // "a" asks for config, then offers; "b" asks and never offers.
    m.handle_message(t0, sid("a"), br#"{"type":"config-request"}"#);
    m.handle_message(t0, sid("b"), br#"{"type":"config-request"}"#);
    assert_eq!(drain(&mut m), vec![config("a"), config("b")]);
    let t1 = t0 + Duration::from_secs(1);
    m.handle_message(t1, sid("a"), &offer(1));
    m.handle_peer(t1, sid("a"), PeerEvent::Connected);
    drain(&mut m);
    // The refresh is due 3300 s after the config, not after the offer.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(3300)));
    m.handle_timeout(t0 + Duration::from_secs(3299));
    assert!(drain(&mut m).is_empty());
    let t2 = t0 + Duration::from_secs(3300);
    m.handle_timeout(t2);
    assert_eq!(drain(&mut m), vec![config("a")]);
    // Rescheduled from the fresh config; the session stays as it was.
    assert_eq!(m.poll_timeout(), Some(t2 + Duration::from_secs(3300)));
    assert_eq!(m.viewers(), 1);
    // After bye nothing is refreshed.
    m.handle_message(t2, sid("a"), br#"{"type":"bye"}"#);
    drain(&mut m);
    m.handle_timeout(t2 + Duration::from_secs(7000));
    assert!(
        !drain(&mut m)
            .iter()
            .any(|o| matches!(o, Output::SendConfig { .. }))
    );
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn without_minted_credentials_nothing_is_refreshed() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), br#"{"type":"config-request"}"#);
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_peer(t0, sid("a"), PeerEvent::Connected);
    drain(&mut m);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn offer_bursts_are_rate_limited_with_busy() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Limits {
            max_viewers: 1000,
            offer_burst: 5,
            offers_per_sec: 1.0,
            ..Limits::default()
        },
        t0,
    );
    for i in 0..8 {
        m.handle_message(t0, sid(&format!("s{i}")), &offer(i));
    }
    let out = drain(&mut m);
    let busy = sent(&out)
        .iter()
        .filter(|(_, msg)| {
            matches!(
                msg,
                ToViewer::Error {
                    code: ErrorCode::Busy,
                    ..
                }
            )
        })
        .count();
    assert_eq!(busy, 3);
    assert_eq!(m.viewers(), 5);
    // Tokens come back with time.
    m.handle_message(t0 + Duration::from_secs(2), sid("late"), &offer(9));
    assert!(m.has_session(&sid("late")));
}

#[test]
fn message_floods_are_dropped_not_answered() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Limits {
            message_burst: 10,
            messages_per_sec: 1.0,
            ..Limits::default()
        },
        t0,
    );
    for _ in 0..100 {
        m.handle_message(t0, sid("x"), b"junk");
    }
    assert_eq!(
        sent(&drain(&mut m)).len(),
        10,
        "only the first 10 are answered"
    );
}

#[test]
fn one_flooding_session_does_not_starve_another() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    for _ in 0..1000 {
        m.handle_message(t0, sid("flood"), b"junk");
    }
    drain(&mut m);
    m.handle_message(t0, sid("good"), &offer(1));
    assert!(
        m.has_session(&sid("good")),
        "a neighbour's offer still gets through"
    );
}

#[test]
fn bad_requests_get_bad_request_and_leave_sessions_alone() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    drain(&mut m);
    for bad in [
        &b"{"[..],
        br#"{"type":"dance"}"#,
        br#"{"type":"offer"}"#,
        br#"[]"#,
    ] {
        m.handle_message(t0, sid("a"), bad);
        let out = sent(&drain(&mut m));
        assert!(
            matches!(
                &out[..],
                [(
                    _,
                    ToViewer::Error {
                        code: ErrorCode::BadRequest,
                        ..
                    }
                )]
            ),
            "{out:?}"
        );
    }
    assert!(m.has_session(&sid("a")));
}

#[test]
fn rejected_offer_ends_the_session_without_bye() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    drain(&mut m);
    m.handle_peer(
        t0,
        sid("a"),
        PeerEvent::OfferRejected {
            code: ErrorCode::BadOffer,
            message: "no H.264".into(),
        },
    );
    let out = drain(&mut m);
    assert!(out.contains(&Output::Peer(PeerCommand::Close { session: sid("a") })));
    assert!(matches!(
        &sent(&out)[..],
        [(
            _,
            ToViewer::Error {
                code: ErrorCode::BadOffer,
                ..
            }
        )]
    ));
    assert!(!m.has_session(&sid("a")));
}

#[test]
fn bye_frees_the_session_and_repeated_bye_is_silent() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    drain(&mut m);
    m.handle_message(t0, sid("a"), br#"{"type":"bye"}"#);
    assert!(drain(&mut m).contains(&Output::Peer(PeerCommand::Close { session: sid("a") })));
    m.handle_message(t0, sid("a"), br#"{"type":"bye"}"#);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn peer_events_for_ended_sessions_are_ignored() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_peer(t0, sid("gone"), PeerEvent::Answer("v=0".into()));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn status_changes_are_published_at_most_once_per_second() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Limits {
            max_viewers: 10,
            ..Limits::default()
        },
        t0,
    );
    m.handle_message(t0, sid("a"), &offer(1));
    let out = drain(&mut m);
    assert!(out.contains(&Output::Status { viewers: 1 }));
    let t1 = t0 + Duration::from_millis(100);
    m.handle_message(t1, sid("b"), &offer(1));
    m.handle_message(t1, sid("c"), &offer(1));
    let out = drain(&mut m);
    assert!(!out.iter().any(|o| matches!(o, Output::Status { .. })));
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    m.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(drain(&mut m), vec![Output::Status { viewers: 3 }]);
}

#[test]
fn shutdown_says_bye_to_everyone_and_refuses_new_offers() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_message(t0, sid("b"), &offer(1));
    drain(&mut m);
    m.shutdown(t0);
    let out = sent(&drain(&mut m));
    assert_eq!(
        out,
        vec![
            (
                "a".into(),
                ToViewer::Bye {
                    reason: ByeReason::Shutdown
                }
            ),
            (
                "b".into(),
                ToViewer::Bye {
                    reason: ByeReason::Shutdown
                }
            ),
        ]
    );
    m.handle_message(t0, sid("c"), &offer(1));
    assert!(matches!(
        &sent(&drain(&mut m))[..],
        [(
            _,
            ToViewer::Error {
                code: ErrorCode::Busy,
                ..
            }
        )]
    ));
}

#[test]
fn failure_after_connect_ends_with_bye_failed() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_peer(t0, sid("a"), PeerEvent::Connected);
    drain(&mut m);
    m.handle_peer(t0, sid("a"), PeerEvent::Failed("ICE".into()));
    assert_eq!(
        sent(&drain(&mut m)),
        vec![(
            "a".into(),
            ToViewer::Bye {
                reason: ByeReason::Failed
            }
        )]
    );
}

#[test]
fn aborted_session_gets_internal_error_frees_its_slot_at_once_and_no_bye() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_message(t0, sid("b"), &offer(1));
    m.handle_peer(t0, sid("a"), PeerEvent::Connected);
    drain(&mut m);
    assert_eq!(m.viewers(), 2);
    m.handle_peer(
        t0,
        sid("a"),
        PeerEvent::Aborted("session task panicked: x".into()),
    );
    let out = drain(&mut m);
    assert!(
        out.contains(&Output::Peer(PeerCommand::Close { session: sid("a") })),
        "{out:?}"
    );
    assert_eq!(
        sent(&out),
        vec![(
            "a".into(),
            ToViewer::error(ErrorCode::Internal, "camera error, retry")
        )],
        "error internal, without the panic text and without a bye"
    );
    assert_eq!(m.viewers(), 1, "the slot is free before any timeout");
    // The camera was full (max 2); the freed slot takes a new viewer at once.
    m.handle_message(t0, sid("c"), &offer(2));
    assert!(drain(&mut m).contains(&Output::Peer(PeerCommand::Offer {
        session: sid("c"),
        sdp: "v=0 offer 2".into()
    })));
    // A later report about the aborted session changes nothing.
    m.handle_peer(t0, sid("a"), PeerEvent::Aborted("again".into()));
    assert!(sent(&drain(&mut m)).is_empty());
    assert_eq!(m.viewers(), 2);
}

#[test]
fn remote_candidates_are_capped_per_offer_and_skipped_silently() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Limits {
            max_remote_candidates: 3,
            session_message_burst: 1_000,
            ..Limits::default()
        },
        t0,
    );
    m.handle_message(t0, sid("a"), &offer(1));
    drain(&mut m);
    let candidate = |n: u32| {
        format!(
            r#"{{"type":"candidate","candidate":{{"candidate":"candidate:{n} 1 udp 1 127.0.0.1 {} typ host","sdpMid":"0"}}}}"#,
            5000 + n
        )
        .into_bytes()
    };
    let added = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Peer(PeerCommand::AddCandidate { .. })))
            .count()
    };
    for n in 0..10 {
        m.handle_message(t0, sid("a"), &candidate(n));
    }
    let out = drain(&mut m);
    assert_eq!(added(&out), 3, "{out:?}");
    assert!(sent(&out).is_empty(), "skipped, not answered: {out:?}");
    // End-of-candidates still passes.
    m.handle_message(t0, sid("a"), br#"{"type":"candidate","candidate":null}"#);
    assert_eq!(added(&drain(&mut m)), 1);
    // An ICE restart (a new offer) starts the count again.
    m.handle_message(t0, sid("a"), &offer(2));
    drain(&mut m);
    for n in 10..15 {
        m.handle_message(t0, sid("a"), &candidate(n));
    }
    assert_eq!(added(&drain(&mut m)), 3);
}

#[test]
fn a_full_camera_displaces_the_oldest_never_connected_session_after_the_grace() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    let ms = Duration::from_millis;
    m.handle_message(t0, sid("a"), &offer(1));
    m.handle_message(t0 + ms(100), sid("b"), &offer(2));
    answer(&mut m, t0 + ms(120), "a");
    answer(&mut m, t0 + ms(120), "b");
    m.handle_peer(t0 + ms(150), sid("b"), PeerEvent::Connected);
    drain(&mut m);
    // Within the grace nobody is displaced: the newcomer gets busy.
    m.handle_message(t0 + ms(1000), sid("c"), &offer(3));
    let out = drain(&mut m);
    assert!(matches!(
        &sent(&out)[..],
        [(s, ToViewer::Error { code: ErrorCode::Busy, .. })] if s == "c"
    ));
    // Past it, the never-connected "a" makes room once "d" is validated; the connected
    // "b" is untouched.
    m.handle_message(t0 + ms(2500), sid("d"), &offer(4));
    answer(&mut m, t0 + ms(2510), "d");
    let out = drain(&mut m);
    assert!(
        out.contains(&Output::Peer(PeerCommand::Close { session: sid("a") })),
        "{out:?}"
    );
    assert!(sent(&out).contains(&(
        "a".to_owned(),
        ToViewer::Bye {
            reason: ByeReason::Timeout
        }
    )));
    assert!(out.contains(&Output::Peer(PeerCommand::Offer {
        session: sid("d"),
        sdp: "v=0 offer 4".into()
    })));
    assert!(m.has_session(&sid("b")) && m.has_session(&sid("d")));
    // Only connected sessions left: the next newcomer is refused, whatever the age.
    m.handle_peer(t0 + ms(2600), sid("d"), PeerEvent::Connected);
    drain(&mut m);
    m.handle_message(t0 + ms(9000), sid("e"), &offer(5));
    let out = drain(&mut m);
    assert!(matches!(
        &sent(&out)[..],
        [(s, ToViewer::Error { code: ErrorCode::Busy, .. })] if s == "e"
    ));
}

#[test]
fn a_live_sessions_renegotiation_survives_a_flood_of_new_session_ids() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    m.handle_message(t0, sid("live"), &offer(1));
    m.handle_peer(t0, sid("live"), PeerEvent::Connected);
    drain(&mut m);
    // Rotating session ids exhaust the shared offer and message budgets.
    for i in 0..2_000 {
        m.handle_message(t0, sid(&format!("x{i}")), &offer(100 + i));
    }
    drain(&mut m);
    // The live session's ICE restart offer and its candidates still get through.
    m.handle_message(t0, sid("live"), &offer(2));
    let cand = br#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}"#;
    m.handle_message(t0, sid("live"), cand);
    let out = drain(&mut m);
    assert!(
        out.contains(&Output::Peer(PeerCommand::Offer {
            session: sid("live"),
            sdp: "v=0 offer 2".into()
        })),
        "{out:?}"
    );
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Peer(PeerCommand::AddCandidate { session, .. }) if *session == sid("live")
        )),
        "{out:?}"
    );
}

#[test]
fn only_validated_offers_take_a_slot() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    let ms = Duration::from_millis;
    m.handle_message(t0, sid("live"), &offer(1));
    answer(&mut m, t0, "live");
    m.handle_peer(t0, sid("live"), PeerEvent::Connected);
    // One slot left. Offers the peer layer will reject hold none meanwhile, so a real
    // viewer's offer is taken even while they are being validated.
    for i in 0..5 {
        m.handle_message(t0 + ms(10), sid(&format!("bad{i}")), &offer(10 + i));
    }
    m.handle_message(t0 + ms(20), sid("real"), &offer(2));
    assert_eq!((m.viewers(), m.admitted()), (7, 1));
    drain(&mut m);
    for i in 0..5 {
        m.handle_peer(
            t0 + ms(30),
            sid(&format!("bad{i}")),
            PeerEvent::OfferRejected {
                code: ErrorCode::BadOffer,
                message: "no H.264".into(),
            },
        );
    }
    answer(&mut m, t0 + ms(40), "real");
    let out = sent(&drain(&mut m));
    assert!(
        out.contains(&(
            "real".to_owned(),
            ToViewer::Answer {
                sdp: "answer real".into()
            }
        )),
        "{out:?}"
    );
    assert_eq!((m.viewers(), m.admitted()), (2, 2));
}

#[test]
fn a_valid_offer_answered_into_a_full_camera_gets_busy_and_no_answer() {
    let t0 = Instant::now();
    let mut m = machine(t0);
    // Two offers for the last two slots, a third validated alongside: the first two
    // answered take the slots, the third is refused when its answer is ready.
    for id in ["a", "b", "c"] {
        m.handle_message(t0, sid(id), &offer(1));
    }
    answer(&mut m, t0, "a");
    answer(&mut m, t0, "c");
    drain(&mut m);
    answer(&mut m, t0, "b");
    let out = drain(&mut m);
    assert!(
        out.contains(&Output::Peer(PeerCommand::Close { session: sid("b") })),
        "{out:?}"
    );
    assert_eq!(
        sent(&out),
        vec![(
            "b".to_owned(),
            ToViewer::error(ErrorCode::Busy, "viewer limit reached")
        )]
    );
    assert!(!m.has_session(&sid("b")));
    assert_eq!((m.viewers(), m.admitted()), (2, 2));
    // A renegotiation of an admitted session is answered whatever the count.
    m.handle_message(t0, sid("a"), &offer(2));
    answer(&mut m, t0, "a");
    assert!(sent(&drain(&mut m)).contains(&(
        "a".to_owned(),
        ToViewer::Answer {
            sdp: "answer a".into()
        }
    )));
}

#[test]
fn offers_being_validated_are_bounded() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Limits {
            max_validating: 3,
            ..Limits::default()
        },
        t0,
    );
    for i in 0..4 {
        m.handle_message(t0, sid(&format!("s{i}")), &offer(i));
    }
    let out = sent(&drain(&mut m));
    assert_eq!(
        out,
        vec![(
            "s3".to_owned(),
            ToViewer::error(ErrorCode::Busy, "too many offers being set up, retry later")
        )]
    );
    answer(&mut m, t0, "s0");
    drain(&mut m);
    m.handle_message(t0, sid("s4"), &offer(4));
    assert!(m.has_session(&sid("s4")));
}
