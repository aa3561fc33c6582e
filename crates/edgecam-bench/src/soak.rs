//! `edgecam-bench soak`: edgecam under a long, ordinary life (docs/reliability.md,
//! "Soak"). Viewers stay, one more joins and leaves every few seconds, the broker is
//! killed and restarted every `--broker-restart-s`, the capture source (a separate
//! GStreamer process feeding edgecam through shared memory, its `pipeline` source) is
//! killed and restarted every `--capture-restart-s`; every `--sample-s` edgecam's RSS,
//! open file descriptors, threads and runtime tasks are read. The report
//! (`soak.json`, `soak.md`) gives their growth from the end of the warm-up to the end.
//!
//! ```sh
//! cargo build --release && target/release/edgecam-bench soak --duration-s 7200
//! ```

use crate::procs::{Edgecam, LoadProc, Proc, free_port, mosquitto, rss_kib, stats};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `edgecam-bench soak` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The edgecam binary (default: `edgecam` beside this binary).
    #[arg(long)]
    pub edgecam: Option<PathBuf>,
    /// Length of the run, s.
    #[arg(long, default_value_t = 7200)]
    pub duration_s: u64,
    /// Growth is measured from the first sample at or after this, s (default: a tenth
    /// of the run, at least one sample interval).
    #[arg(long)]
    pub warmup_s: Option<u64>,
    /// Interval between samples, s.
    #[arg(long, default_value_t = 60)]
    pub sample_s: u64,
    /// The broker is killed (SIGKILL) and restarted on the same port this often, s.
    #[arg(long, default_value_t = 600)]
    pub broker_restart_s: u64,
    /// The capture source is killed (SIGKILL) and restarted this often, s.
    #[arg(long, default_value_t = 900)]
    pub capture_restart_s: u64,
    /// Viewers held for the whole run.
    #[arg(long, default_value_t = 2)]
    pub viewers: usize,
    /// How long each churning viewer stays after its first frame, ms.
    #[arg(long, default_value_t = 3000)]
    pub churn_ms: u64,
    /// Video size and rate of the source, `WxH@FPS`.
    #[arg(long, default_value = "640x360@30")]
    pub video: String,
    /// edgecam's `RUST_LOG`.
    #[arg(long, default_value = "warn,edgecam=info")]
    pub edgecam_log: String,
    /// Keep the work directory (config, edgecam's log) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Where `soak.json` and `soak.md` go.
    #[arg(long, default_value = "target/soak")]
    pub out_dir: PathBuf,
}

/// One reading of edgecam and the viewers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    at_s: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    runtime_tasks: Option<u64>,
    sessions: u64,
    /// Frames the held viewers had received in all.
    held_viewer_frames: u64,
    churn_joins: u64,
    churn_first_frames: u64,
    churn_failures: u64,
}

/// Growth of one figure from the end of the warm-up to the last sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Growth {
    at_warmup: i64,
    at_end: i64,
    growth: i64,
    max_after_warmup: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SoakReport {
    duration_s: u64,
    warmup_s: u64,
    broker_restarts: u32,
    capture_restarts: u32,
    rss_kib: Growth,
    fds: Growth,
    threads: Growth,
    runtime_tasks: Option<Growth>,
    churn_joins: u64,
    churn_first_frames: u64,
    churn_failures: u64,
    /// Whether the held viewers were still receiving frames in the last interval.
    held_viewers_playing_at_end: bool,
    samples: Vec<Sample>,
}

fn count_dir(path: &str) -> u64 {
    std::fs::read_dir(path).map_or(0, |d| d.count() as u64)
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The feed: test pattern → raw I420 in shared memory, from its own process.
fn feed(socket: &Path, caps: &str) -> anyhow::Result<Proc> {
    let child = edgecam_testkit::feed::shm(socket, caps, 16_000_000).map_err(anyhow::Error::msg)?;
    Ok(Proc::new(child))
}

fn growth(samples: &[&Sample], f: impl Fn(&Sample) -> Option<u64>) -> Option<Growth> {
    let values: Vec<i64> = samples
        .iter()
        .map(|s| f(s).and_then(|v| i64::try_from(v).ok()))
        .collect::<Option<_>>()?;
    let (first, last) = (*values.first()?, *values.last()?);
    Some(Growth {
        at_warmup: first,
        at_end: last,
        growth: last - first,
        max_after_warmup: values.iter().copied().max().unwrap_or(last),
    })
}

/// Runs the soak.
///
/// # Errors
/// When a process cannot be started, edgecam exits, or the report cannot be written.
pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    let edgecam_bin = match &args.edgecam {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("edgecam"),
    };
    let (size, fps) = args
        .video
        .split_once('@')
        .ok_or_else(|| anyhow::anyhow!("--video: WxH@FPS"))?;
    let (w, h) = size
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("--video: WxH@FPS"))?;
    let caps = format!("video/x-raw,format=I420,width={w},height={h},framerate={fps}/1");
    let dir = std::env::temp_dir().join(format!("edgecam-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = soak(args, &edgecam_bin, &dir, (w, h, fps, &caps));
    if args.keep {
        eprintln!("edgecam-bench soak: work directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = outcome?;
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(
        args.out_dir.join("soak.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out_dir.join("soak.md"), &md)?;
    println!("{md}");
    Ok(())
}

fn soak(
    args: &SoakArgs,
    edgecam_bin: &Path,
    dir: &Path,
    (w, h, fps, caps): (&str, &str, &str, &str),
) -> anyhow::Result<SoakReport> {
    let (port, ws_port, http_port) = (free_port()?, free_port()?, free_port()?);
    let mut broker = Some(mosquitto(dir, None, "127.0.0.1", port, ws_port)?);
    let socket = dir.join("feed");
    let mut source = Some(feed(&socket, caps)?);
    let config = format!(
        "[camera]\nid = \"bench\"\n[video]\nsource = \"pipeline\"\n\
         pipeline = \"{}\"\n\
         width = {w}\nheight = {h}\nfps = {fps}\nbitrate_kbps = 1000\n\
         [audio]\nsource = \"test\"\n[access]\nmode = \"open\"\n\
         [signaling]\nbroker = \"mqtt://127.0.0.1:{port}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [webrtc]\nudp_bind = [\"127.0.0.1\"]\n",
        edgecam_testkit::feed::shm_source(&socket, caps)
    );
    let mut cam = Edgecam::spawn(edgecam_bin, dir, "soak", &config, None, &args.edgecam_log)?;
    cam.wait_ready(Duration::from_secs(30))?;
    let pid = cam.proc.pid();
    let mut load = LoadProc::spawn(
        port,
        &[
            "--viewers".into(),
            args.viewers.to_string(),
            "--churn-ms".into(),
            args.churn_ms.to_string(),
        ],
    )?;
    load.next("joined", Duration::from_secs(60))?;

    let start = Instant::now();
    let duration = Duration::from_secs(args.duration_s);
    let sample_every = Duration::from_secs(args.sample_s.max(1));
    let broker_every = Duration::from_secs(args.broker_restart_s.max(1));
    let capture_every = Duration::from_secs(args.capture_restart_s.max(1));
    // Restarts fall half a sample interval off the samples, so no reading is taken
    // while the feed or the broker is away (a reading then is a trough, not a level).
    let offset = sample_every / 2;
    let (mut next_sample, mut next_broker, mut next_capture) =
        (sample_every, broker_every + offset, capture_every + offset);
    let (mut broker_restarts, mut capture_restarts) = (0u32, 0u32);
    let mut samples: Vec<Sample> = Vec::new();
    eprintln!(
        "edgecam-bench soak: {} s; samples every {} s, broker restart every {} s, capture restart every {} s",
        args.duration_s, args.sample_s, args.broker_restart_s, args.capture_restart_s
    );
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
        anyhow::ensure!(
            cam.proc.alive(),
            "edgecam exited during the soak; log: {}",
            cam.log_tail()
        );
        let now = start.elapsed();
        if now >= next_broker {
            next_broker += broker_every;
            if let Some(mut b) = broker.take() {
                b.kill();
            }
            std::thread::sleep(Duration::from_millis(500));
            broker = Some(mosquitto(dir, None, "127.0.0.1", port, ws_port)?);
            broker_restarts += 1;
        }
        if now >= next_capture {
            next_capture += capture_every;
            if let Some(mut s) = source.take() {
                s.kill();
            }
            std::thread::sleep(Duration::from_millis(1000));
            source = Some(feed(&socket, caps)?);
            capture_restarts += 1;
        }
        if now >= next_sample {
            next_sample += sample_every;
            let doc = stats(http_port).unwrap_or(Value::Null);
            let snap = load.snapshot()?;
            let held_viewer_frames = snap["viewers"]
                .as_array()
                .map_or(0, |v| v.iter().filter_map(|x| x["frames"].as_u64()).sum());
            let sample = Sample {
                at_s: now.as_secs(),
                rss_kib: rss_kib(pid),
                fds: count_dir(&format!("/proc/{pid}/fd")),
                threads: threads(pid),
                runtime_tasks: doc["runtimeTasks"].as_u64(),
                sessions: doc["sessions"].as_array().map_or(0, |s| s.len() as u64),
                held_viewer_frames,
                churn_joins: snap["churn"]["joins"].as_u64().unwrap_or(0),
                churn_first_frames: snap["churn"]["firstFrames"].as_u64().unwrap_or(0),
                churn_failures: snap["churn"]["failures"].as_u64().unwrap_or(0),
            };
            eprintln!(
                "soak {:>6} s: RSS {} KiB, {} fds, {} threads, {:?} tasks, {} sessions, churn {}/{} ({} failed)",
                sample.at_s,
                sample.rss_kib,
                sample.fds,
                sample.threads,
                sample.runtime_tasks,
                sample.sessions,
                sample.churn_first_frames,
                sample.churn_joins,
                sample.churn_failures
            );
            samples.push(sample);
        }
    }
    load.quit();
    drop(source);
    drop(broker);
    let warmup_s = args
        .warmup_s
        .unwrap_or((args.duration_s / 10).max(args.sample_s));
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warmup_s).collect();
    anyhow::ensure!(
        after.len() >= 2,
        "fewer than two samples after the warm-up: lengthen --duration-s"
    );
    let last = samples.last().cloned();
    let before_last = samples.iter().rev().nth(1).cloned();
    let held_viewers_playing_at_end = match (&before_last, &last) {
        (Some(a), Some(b)) => b.held_viewer_frames > a.held_viewer_frames,
        _ => false,
    };
    let last = last.unwrap_or_else(|| unreachable!("two samples exist"));
    let or_zero = |g: Option<Growth>| {
        g.unwrap_or(Growth {
            at_warmup: 0,
            at_end: 0,
            growth: 0,
            max_after_warmup: 0,
        })
    };
    Ok(SoakReport {
        duration_s: args.duration_s,
        warmup_s,
        broker_restarts,
        capture_restarts,
        rss_kib: or_zero(growth(&after, |s| Some(s.rss_kib))),
        fds: or_zero(growth(&after, |s| Some(s.fds))),
        threads: or_zero(growth(&after, |s| Some(s.threads))),
        runtime_tasks: growth(&after, |s| s.runtime_tasks),
        churn_joins: last.churn_joins,
        churn_first_frames: last.churn_first_frames,
        churn_failures: last.churn_failures,
        held_viewers_playing_at_end,
        samples,
    })
}

fn markdown(r: &SoakReport) -> String {
    let row = |name: &str, g: &Growth| {
        format!(
            "| {name} | {} | {} | {:+} | {} |\n",
            g.at_warmup, g.at_end, g.growth, g.max_after_warmup
        )
    };
    let mut md = format!(
        "## Soak: {} s, warm-up {} s\n\n{} broker restarts, {} capture restarts; churn: {} joins, \
         {} first frames, {} failed; held viewers playing at the end: {}\n\n\
         | figure | after warm-up | at end | growth | max after warm-up |\n|---|---|---|---|---|\n",
        r.duration_s,
        r.warmup_s,
        r.broker_restarts,
        r.capture_restarts,
        r.churn_joins,
        r.churn_first_frames,
        r.churn_failures,
        r.held_viewers_playing_at_end
    );
    md += &row("RSS, KiB", &r.rss_kib);
    md += &row("open fds", &r.fds);
    md += &row("threads", &r.threads);
    if let Some(t) = &r.runtime_tasks {
        md += &row("runtime tasks", t);
    }
    md += "\n| s | RSS KiB | fds | threads | tasks | sessions |\n|---|---|---|---|---|---|\n";
    for s in &r.samples {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            s.at_s,
            s.rss_kib,
            s.fds,
            s.threads,
            s.runtime_tasks.map_or("-".to_owned(), |t| t.to_string()),
            s.sessions
        );
    }
    md
}
