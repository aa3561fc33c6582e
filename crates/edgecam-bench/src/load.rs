//! The load process (`edgecam-bench load …`): many webrtc-rs viewers in one process,
//! apart from edgecam so edgecam's CPU figures are its own. Each viewer is edgecam's
//! `ProbeViewer` (RFC 6184 depacketization, complete access units and IDRs counted,
//! Opus packets read) with its own MQTT connection speaking the signaling contract
//! (`docs/signaling.md`) through the testkit's `ProbeSession`, the same client the
//! suite's test viewer uses; it says `bye` at the end.
//!
//! It talks to the bench over JSON lines: on stdout one `joined` line once every viewer
//! has its first frame (or gave up), then one `snapshot` line per `snapshot` read on
//! stdin; `quit` or end of input closes every viewer with `bye`. With `--sequential R`
//! it instead joins R viewers one after another, each until its first frame, and prints
//! one `ttff` line per join. With `--churn-ms C`, besides the viewers it holds, one more
//! viewer at a time joins, waits for its first frame, stays C ms and leaves, over and
//! over; `snapshot` lines then carry the churn counts (the soak, `edgecam-bench soak`).

use edgecam::peer::probe::{ProbeOptions, ProbeReport};
use edgecam_testkit::signal::{Endpoint, ProbeSession};
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    /// Churn: one extra viewer at a time joins, stays this long (ms) after its first
    /// frame, and leaves, again and again until `quit`.
    #[arg(long)]
    pub churn_ms: Option<u64>,
}

/// What the churning viewers met so far.
#[derive(Default)]
struct Churn {
    joins: AtomicU64,
    first_frames: AtomicU64,
    failures: AtomicU64,
}

impl Churn {
    fn json(&self) -> Value {
        json!({
            "joins": self.joins.load(Ordering::Relaxed),
            "firstFrames": self.first_frames.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
        })
    }
}

/// One churning viewer after another until `stop`: each joins, waits for its first
/// frame (at most `limit`), stays `stay` and leaves with `bye`.
async fn churn(
    args: LoadArgs,
    tag: u32,
    stay: Duration,
    limit: Duration,
    counts: Arc<Churn>,
    stop: Arc<AtomicBool>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let session = format!("churn-{tag}-{i}");
        counts.joins.fetch_add(1, Ordering::Relaxed);
        match LoadViewer::join(&args, &session).await {
            Ok(v) => {
                if v.first_frame(limit).await.video_frames > 0 {
                    counts.first_frames.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("load: {session}: no first frame within {limit:?}");
                    counts.failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(stay).await;
                v.leave().await;
            }
            Err(e) => {
                eprintln!("load: {session}: {e}");
                counts.failures.fetch_add(1, Ordering::Relaxed);
                // A broker away for a moment: try again after a pause, not at once.
                tokio::time::sleep(stay).await;
            }
        }
    }
}

/// One load viewer: a testkit probe session.
struct LoadViewer(ProbeSession);

impl LoadViewer {
    async fn join(args: &LoadArgs, session: &str) -> anyhow::Result<Self> {
        let ep = Endpoint {
            port: args.broker_port,
            prefix: args.prefix.clone(),
            camera: args.camera.clone(),
            session: session.to_owned(),
            invitation: None,
            login: None,
        };
        let options = ProbeOptions {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            ..ProbeOptions::default()
        };
        Ok(Self(ProbeSession::join(&ep, options).await?))
    }

    fn report(&self) -> ProbeReport {
        self.0.probe.report()
    }

    /// Waits until the first complete access unit arrived, at most `limit`.
    async fn first_frame(&self, limit: Duration) -> ProbeReport {
        let end = Instant::now() + limit;
        loop {
            let r = self.report();
            if r.video_frames > 0 || Instant::now() >= end {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn leave(self) {
        let log = self.0.log();
        for msg in &log.ended {
            eprintln!("{}: camera said {msg}", self.0.session);
        }
        for f in &log.failures {
            eprintln!("{}: {f}", self.0.session);
        }
        self.0.leave().await;
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
    let counts = Arc::new(Churn::default());
    let stop = Arc::new(AtomicBool::new(false));
    let churner = args.churn_ms.map(|ms| {
        tokio::spawn(churn(
            args.clone(),
            tag,
            Duration::from_millis(ms),
            limit,
            counts.clone(),
            stop.clone(),
        ))
    });

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
                        let r = v.report();
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
                emit(&json!({"event": "snapshot", "viewers": list, "churn": counts.json()}));
            }
            "quit" => break,
            other => eprintln!("load: unknown command {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(task) = churner {
        // The churning viewer in hand finishes its round (bounded by its first-frame
        // limit and its stay); past that it is dropped.
        let bound =
            limit + Duration::from_millis(args.churn_ms.unwrap_or(0)) + Duration::from_secs(5);
        if tokio::time::timeout(bound, task).await.is_err() {
            eprintln!("load: the churning viewer did not finish within {bound:?}");
        }
    }
    futures::future::join_all(viewers.into_iter().map(|(_, v)| v.leave())).await;
    Ok(())
}
