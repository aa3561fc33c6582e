//! The load process (`edgecam-bench load …`): many webrtc-rs viewers in one process,
//! apart from edgecam so edgecam's CPU figures are its own. Each viewer is edgecam's
//! `ProbeViewer` (RFC 6184 depacketization, complete access units and IDRs counted,
//! Opus packets read) with its own MQTT connection speaking the signaling contract
//! (`docs/signaling.md`): it subscribes to its session's `to-viewer` topic, publishes its
//! SDP offer and trickled ICE candidates on `to-camera`, applies the answer and the
//! camera's candidates, and says `bye` at the end. This module is the bench's only user
//! of `rumqttc`.
//!
//! It talks to the bench over JSON lines: on stdout one `joined` line once every viewer
//! has its first frame (or gave up), then one `snapshot` line per `snapshot` read on
//! stdin; `quit` or end of input closes every viewer with `bye`. With `--sequential R`
//! it instead joins R viewers one after another, each until its first frame, and prints
//! one `ttff` line per join.

use edgecam::peer::probe::{ProbeOptions, ProbeReport, ProbeViewer};
use edgecam::signaling::protocol::CandidateInit;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What the load process is told.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Broker's MQTT port on 127.0.0.1.
    #[arg(long)]
    pub broker_port: u16,
    /// Camera id.
    #[arg(long, default_value = "bench")]
    pub camera: String,
    /// Topic prefix (contract default `edgecam`).
    #[arg(long, default_value = "edgecam")]
    pub prefix: String,
    /// Viewers held at once.
    #[arg(long, default_value_t = 1)]
    pub viewers: usize,
    /// Joins in flight at once while connecting `--viewers`.
    #[arg(long, default_value_t = 5)]
    pub join_concurrency: usize,
    /// Instead: join this many viewers one after another, each until its first frame.
    #[arg(long)]
    pub sequential: Option<usize>,
    /// How long one viewer may take to its first frame, in s.
    #[arg(long, default_value_t = 20)]
    pub first_frame_timeout_s: u64,
}

/// One viewer: its probe and its signaling connection.
struct LoadViewer {
    probe: Arc<ProbeViewer>,
    client: AsyncClient,
    to_camera: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LoadViewer {
    /// Connects to the broker as client `session`, subscribes to `to-viewer`, waits for
    /// the SUBACK (so the answer cannot be missed), then publishes the offer.
    async fn join(args: &LoadArgs, session: &str) -> anyhow::Result<Self> {
        let base = format!("{}/{}/session/{session}", args.prefix, args.camera);
        let (to_viewer, to_camera) = (format!("{base}/to-viewer"), format!("{base}/to-camera"));
        let mut opts = MqttOptions::new(session, "127.0.0.1", args.broker_port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        client.subscribe(&to_viewer, QoS::AtLeastOnce).await?;
        let (msg_tx, mut msg_rx) = mpsc::unbounded_channel::<Value>();
        let (suback_tx, suback_rx) = oneshot::channel::<()>();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            let mut suback = Some(suback_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = suback.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = msg_tx.send(serde_json::from_slice(&p.payload).unwrap_or_default());
                    }
                    Ok(_) => {}
                    // rumqttc reconnects on the next poll; a pause keeps a dead broker
                    // from turning this into a busy loop.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }));
        tokio::time::timeout(Duration::from_secs(10), suback_rx)
            .await
            .map_err(|_| anyhow::anyhow!("{session}: no SUBACK within 10 s"))??;

        let (probe, mut local_rx) = ProbeViewer::new(ProbeOptions {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            ..ProbeOptions::default()
        })
        .await?;
        let probe = Arc::new(probe);
        let offer = probe.create_offer().await?;
        publish(&client, &to_camera, &json!({"type": "offer", "sdp": offer})).await;
        {
            let (client, topic) = (client.clone(), to_camera.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(Some(c)) = local_rx.recv().await {
                    publish(
                        &client,
                        &topic,
                        &json!({"type": "candidate", "candidate": c}),
                    )
                    .await;
                }
            }));
        }
        {
            let probe = probe.clone();
            let session = session.to_owned();
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = msg_rx.recv().await {
                    match msg["type"].as_str() {
                        Some("answer") => {
                            let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
                            if let Err(e) = probe.apply_answer(sdp).await {
                                eprintln!("{session}: {e}");
                            }
                        }
                        Some("candidate") => {
                            // `null` is end-of-candidates (contract, trickle ICE).
                            match serde_json::from_value::<Option<CandidateInit>>(
                                msg["candidate"].clone(),
                            ) {
                                Ok(c) => {
                                    if let Err(e) = probe.add_candidate(c).await {
                                        eprintln!("{session}: {e}");
                                    }
                                }
                                Err(e) => eprintln!("{session}: bad candidate: {e}"),
                            }
                        }
                        Some("error" | "bye") => eprintln!("{session}: camera said {msg}"),
                        _ => {}
                    }
                }
            }));
        }
        Ok(Self {
            probe,
            client,
            to_camera,
            tasks,
        })
    }

    /// Waits until the first complete access unit arrived, at most `limit`.
    async fn first_frame(&self, limit: Duration) -> ProbeReport {
        let end = Instant::now() + limit;
        loop {
            let r = self.probe.report();
            if r.video_frames > 0 || Instant::now() >= end {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn leave(self) {
        publish(&self.client, &self.to_camera, &json!({"type": "bye"})).await;
        // Give the bye its moment on the wire before the connection goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.probe.close().await;
        let _ = self.client.disconnect().await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn publish(client: &AsyncClient, topic: &str, msg: &Value) {
    let payload = serde_json::to_vec(msg).unwrap_or_default();
    if let Err(e) = client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
    {
        eprintln!("publish on {topic}: {e}");
    }
}

fn first_frame_line(session: &str, r: &ProbeReport) -> Value {
    json!({
        "session": session,
        "firstFrameMs": r.first_frame_after_offer.map(|d| d.as_secs_f64() * 1000.0),
        "connectedMs": r.connected_after_offer.map(|d| d.as_secs_f64() * 1000.0),
        "firstFrameIdr": r.first_frame_idr_with_sps_pps,
    })
}

fn emit(line: &Value) {
    println!("{line}");
}

/// Runs the load process until told to quit (or, with `--sequential`, until done).
///
/// # Errors
/// When the runtime cannot start.
pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    edgecam::app::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let limit = Duration::from_secs(args.first_frame_timeout_s);
        let tag = std::process::id();
        if let Some(runs) = args.sequential {
            for i in 0..runs {
                let session = format!("ttff-{tag}-{i}");
                match LoadViewer::join(args, &session).await {
                    Ok(v) => {
                        let r = v.first_frame(limit).await;
                        let mut line = first_frame_line(&session, &r);
                        line["event"] = "ttff".into();
                        emit(&line);
                        v.leave().await;
                    }
                    Err(e) => {
                        emit(&json!({"event": "ttff", "session": session, "error": e.to_string()}))
                    }
                }
                // Joins a moment apart, as people arrive, not inside one keyframe-gate
                // window.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            return Ok(());
        }
        hold(args, limit, tag).await
    })
}

async fn hold(args: &LoadArgs, limit: Duration, tag: u32) -> anyhow::Result<()> {
    let mut viewers: Vec<(String, LoadViewer)> = Vec::new();
    let mut joins = Vec::new();
    let sessions: Vec<String> = (0..args.viewers)
        .map(|i| format!("load-{tag}-{i}"))
        .collect();
    for (i, chunk) in sessions.chunks(args.join_concurrency.max(1)).enumerate() {
        // edgecam answers at most 5 offers a second after a burst of 20 (its flood
        // limit; more get `busy`): batches a second apart stay inside it.
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let batch = chunk.iter().map(|s| async move {
            let joined = LoadViewer::join(args, s).await;
            (s.clone(), joined)
        });
        for (s, joined) in futures::future::join_all(batch).await {
            match joined {
                Ok(v) => viewers.push((s, v)),
                Err(e) => joins.push(json!({"session": s, "error": e.to_string()})),
            }
        }
    }
    // One deadline for all: a viewer the camera refused must not hold up the others.
    let deadline = Instant::now() + limit;
    for (s, v) in &viewers {
        let r = v
            .first_frame(deadline.saturating_duration_since(Instant::now()))
            .await;
        joins.push(first_frame_line(s, &r));
    }
    emit(&json!({"event": "joined", "viewers": joins}));

    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(cmd) = line_rx.recv().await {
        match cmd.trim() {
            "snapshot" => {
                let list: Vec<Value> = viewers
                    .iter()
                    .map(|(s, v)| {
                        let r = v.probe.report();
                        json!({
                            "session": s,
                            "frames": r.video_frames,
                            "keyframes": r.keyframes,
                            "opusPackets": r.opus_packets,
                            "packetsLost": r.video_packets_lost,
                            "incompleteFrames": r.incomplete_frames,
                            "lastTimestamp": r.last_video_timestamp,
                            "state": r.state,
                        })
                    })
                    .collect();
                emit(&json!({"event": "snapshot", "viewers": list}));
            }
            "quit" => break,
            other => eprintln!("load: unknown command {other:?}"),
        }
    }
    futures::future::join_all(viewers.into_iter().map(|(_, v)| v.leave())).await;
    Ok(())
}
