//! The cap on retained messages of the embedded broker.
//!
//! rumqttd 0.20 keeps every retained message in a map without a limit and has no
//! setting for one, so any client that may publish could grow the camera's memory by
//! retaining payloads on ever new topics. The only retained message the contract uses
//! is the camera's status (signaling-v1, "Topics"), so the sweeper clears every other
//! one. A second in-process link subscribed to `#` meters what is published (the
//! broker strips the retain flag from live messages, so any publish may have been
//! retained): a sweep follows every [`SWEEP_BYTES`] published, and [`SWEEP_INTERVAL`]
//! after the last publish at the latest. Retained messages thus hold at most about
//! `SWEEP_BYTES` plus what arrives while a sweep runs, and a broker without traffic
//! is never swept.
//!
//! It talks to the router over an in-process link (no socket, no login): it subscribes
//! to `#` asking for the retained messages (MQTT 5 Retain Handling 0, §3.8.3.1),
//! takes those flagged retained, publishes a zero-length retained message on each
//! topic to delete it (MQTT 3.1.1 §3.3.1.3), and unsubscribes. rumqttd hands out at
//! most `max_outgoing_packet_count` retained messages per subscription, so a full batch
//! is followed by another at once, up to [`MAX_BATCHES`] per sweep.

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Filter, Packet, Publish, QoS, RetainForwardRule, Subscribe, Unsubscribe};
use rumqttd::{Broker, Notification};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Longest wait between a publish and the sweep after it.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Bytes published (payload and topic, the status excepted) that start a sweep at once.
pub const SWEEP_BYTES: usize = 1024 * 1024;

/// Subscriptions per sweep (each returns up to `batch` retained messages).
const MAX_BATCHES: usize = 64;

/// Longest wait for a subscription's retained messages over the local link.
const COLLECT_WAIT: Duration = Duration::from_millis(200);

/// Once they flow, a pause this long means the batch is complete.
const COLLECT_IDLE: Duration = Duration::from_millis(10);

/// Topics to delete out of `retained`: every one but `keep` (the status topic).
pub fn to_clear<'a>(retained: impl IntoIterator<Item = &'a str>, keep: &str) -> Vec<String> {
    let mut topics: Vec<String> = retained
        .into_iter()
        .filter(|t| *t != keep)
        .map(str::to_owned)
        .collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// Starts the sweeper on a thread of its own, linked to `broker`'s router; `keep` is
/// the camera's status topic (replaced on reload).
///
/// # Errors
/// The router refused the link, or the thread could not be spawned.
pub fn spawn(broker: &Broker, keep: Arc<RwLock<String>>, batch: usize) -> std::io::Result<()> {
    let link = |name: &str| {
        broker
            .link(name)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let (tx, rx) = link("edgecam-retained-sweeper")?;
    let (mut meter_tx, meter_rx) = link("edgecam-retained-meter")?;
    meter_tx
        .subscribe("#")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::thread::Builder::new()
        .name("mqtt-retained".into())
        .spawn(move || {
            let _meter_tx = meter_tx;
            run(tx, rx, meter_rx, &keep, batch);
        })
        .map(drop)
}

fn run(mut tx: LinkTx, mut rx: LinkRx, mut meter: LinkRx, keep: &RwLock<String>, batch: usize) {
    // Bytes published since the last sweep, and when the first of them came.
    let mut published = 0usize;
    let mut since: Option<Instant> = None;
    loop {
        let deadline =
            since.map_or_else(|| Instant::now() + SWEEP_INTERVAL, |t| t + SWEEP_INTERVAL);
        let is_status =
            |topic: &[u8]| *topic == *keep.read().unwrap_or_else(|p| p.into_inner()).as_bytes();
        match meter.recv_deadline(deadline) {
            Ok(Some(Notification::Forward(f))) if !is_status(&f.publish.topic) => {
                published += f.publish.payload.len() + f.publish.topic.len();
                since.get_or_insert_with(Instant::now);
            }
            // The router stops serving a link whose buffer filled until it says Ready.
            Ok(Some(Notification::Unschedule)) => {
                let _ = meter.ready();
            }
            Ok(_) => {}
            // Before the deadline: the router is gone. Either the broker thread ended, or
            // rumqttd's router thread panicked while its listeners live on (seen under a
            // connection flood: an `Event::Ready` for a link already gone hit an
            // `unwrap` in its scheduler, upstream bytebeamio/rumqtt#991, patched in
            // vendor/rumqttd; something else may yet do the same). Both leave a
            // broker that routes nothing and cannot be restarted in-process: mark it
            // ended, so the health check stops petting the watchdog and systemd
            // restarts edgecam.
            Err(_) if Instant::now() < deadline => {
                log::error!(
                    "embedded broker: its router is gone (retained-message sweeper lost it); \
                     signaling through it has stopped"
                );
                super::mark_ended();
                return;
            }
            Err(_) => {}
        }
        let due = published >= SWEEP_BYTES || since.is_some_and(|t| t.elapsed() >= SWEEP_INTERVAL);
        if !due {
            continue;
        }
        (published, since) = (0, None);
        let keep_topic = keep.read().unwrap_or_else(|p| p.into_inner()).clone();
        let swept = sweep(&mut tx, &mut rx, &keep_topic, batch);
        // Traffic came (a sweep only follows some): hand back what it left freed.
        crate::memory::trim();
        match swept {
            Ok(0) => {}
            Ok(n) => {
                log::warn!(
                    "embedded broker: cleared {n} retained message(s) nobody may keep there (only the camera's status is retained)"
                );
            }
            Err(e) => {
                log::error!("embedded broker: retained-message sweeper stopped: {e}");
                return;
            }
        }
    }
}

/// One sweep; returns how many retained messages it deleted.
fn sweep(tx: &mut LinkTx, rx: &mut LinkRx, keep: &str, batch: usize) -> Result<usize, String> {
    let mut cleared = 0;
    for _ in 0..MAX_BATCHES {
        send(
            tx,
            Packet::Subscribe(
                Subscribe {
                    pkid: 0,
                    filters: vec![Filter {
                        path: "#".into(),
                        qos: QoS::AtMostOnce,
                        nolocal: true,
                        preserve_retain: true,
                        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                    }],
                },
                None,
            ),
        )?;
        let retained = collect(rx);
        send(
            tx,
            Packet::Unsubscribe(
                Unsubscribe {
                    pkid: 0,
                    filters: vec!["#".into()],
                },
                None,
            ),
        )?;
        let clear = to_clear(retained.iter().map(String::as_str), keep);
        for topic in &clear {
            send(
                tx,
                Packet::Publish(
                    Publish::new(bytes::Bytes::from(topic.clone()), bytes::Bytes::new(), true),
                    None,
                ),
            )?;
        }
        cleared += clear.len();
        // Fewer than a full batch: nothing more is retained.
        if retained.len() < batch {
            break;
        }
    }
    // Drain what the subscription left queued (live traffic, the acks).
    let drained = Instant::now() + Duration::from_millis(5);
    while let Ok(n) = rx.recv_deadline(drained) {
        if matches!(n, Some(Notification::Unschedule)) {
            let _ = rx.ready();
        }
    }
    Ok(cleared)
}

fn send(tx: &mut LinkTx, packet: Packet) -> Result<(), String> {
    // `LinkTx::send` only queues the packet and wakes the router; it never waits.
    futures::executor::block_on(tx.send(packet))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The topics of the retained messages delivered for the subscription just made.
fn collect(rx: &mut LinkRx) -> Vec<String> {
    let end = Instant::now() + COLLECT_WAIT;
    let mut deadline = end;
    let mut topics = Vec::new();
    loop {
        let got = rx.recv_deadline(deadline);
        if got.is_ok() {
            deadline = end.min(Instant::now() + COLLECT_IDLE);
        }
        match got {
            Ok(Some(Notification::Forward(f))) if f.publish.retain => {
                topics.push(String::from_utf8_lossy(&f.publish.topic).into_owned());
            }
            Ok(Some(Notification::Unschedule)) => {
                let _ = rx.ready();
            }
            Ok(_) => {}
            // The deadline passed (or the router is gone: the next send says so).
            Err(_) => return topics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_the_status_is_cleared_once() {
        let retained = [
            "edgecam/cam/status",
            "edgecam/cam/session/a/to-camera",
            "x/y",
            "x/y",
            "edgecam/other/status",
        ];
        assert_eq!(
            to_clear(retained, "edgecam/cam/status"),
            vec![
                "edgecam/cam/session/a/to-camera".to_owned(),
                "edgecam/other/status".to_owned(),
                "x/y".to_owned(),
            ]
        );
        assert!(to_clear(["edgecam/cam/status"], "edgecam/cam/status").is_empty());
    }
}
