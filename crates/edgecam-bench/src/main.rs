//! `edgecam-bench`: measures what viewers feel (docs/performance.md).
//!
//! It starts edgecam (the release binary beside this one unless `--edgecam` says
//! otherwise) with the 1280x720 30 fps test pattern and test tone, x264 at 2000 kbit/s,
//! a Mosquitto broker on an ephemeral loopback port, and N webrtc-rs load viewers in a
//! separate process (`edgecam-bench load`), then reports, as JSON and markdown:
//! start-up (spawn → first encoded frame, → `READY=1`), time to first frame (load
//! viewers and fresh headless Chromiums, with a short and a long periodic keyframe
//! interval), capture → RTP send latency (edgecam's own histogram), and fan-out cost
//! (edgecam's CPU and RSS, per-viewer fps and loss, the load process's CPU) at each N.
//!
//! ```sh
//! cargo build --release && target/release/edgecam-bench
//! ```

mod browser;
mod load;
mod procs;
mod report;
mod soak;

use clap::{Parser, Subcommand};
use procs::{Edgecam, LoadProc, Proc, clk_tck, cpu_ticks, free_port, mosquitto, rss_kib};
use report::{Chromium, Fanout, FirstFrame, Report, Spread, Startup};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "edgecam-bench",
    version,
    about = "edgecam benchmark: time to first frame, latency, fan-out cost, start-up"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: the load-viewer process the benchmark starts.
    Load(load::LoadArgs),
    /// The soak: hours of viewers joining and leaving, broker and capture restarts,
    /// with edgecam's RSS, fds, threads and tasks read every minute.
    Soak(soak::SoakArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// The edgecam binary (default: `edgecam` beside this binary).
    #[arg(long)]
    edgecam: Option<PathBuf>,
    /// Viewer counts of the fan-out steps.
    #[arg(long, value_delimiter = ',', default_value = "0,1,10,25,50")]
    viewers: Vec<usize>,
    /// Steady window of each fan-out step, s.
    #[arg(long, default_value_t = 30)]
    window_s: u64,
    /// Wait between the last viewer's first frame and the window, s.
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    /// Periodic keyframe intervals for the time-to-first-frame runs, ms.
    #[arg(long, value_delimiter = ',', default_value = "2000,10000")]
    keyframe_intervals_ms: Vec<u32>,
    /// Load viewer joins per keyframe interval (one after another).
    #[arg(long, default_value_t = 20)]
    ttff_runs: usize,
    /// Fresh Chromium runs per keyframe interval and page broker (0 = skip; needs root
    /// for namespaces).
    #[arg(long, default_value_t = 10)]
    browser_runs: usize,
    /// Visits per Chromium run: 1 is a first visit (an empty profile); with 2 or more
    /// each run is a returning viewer whose browser keeps its profile (HTTP and
    /// compiled-code caches) from one visit to the next, and the report has a row per
    /// visit (a browser compiles a script into its code cache on the second visit and
    /// uses that from the third on).
    #[arg(long, default_value_t = 1)]
    visits: usize,
    /// The brokers the Chromium page reaches the camera through: `mosquitto` (an
    /// external Mosquitto, its WebSocket listener) and `embedded` (edgecam's own).
    #[arg(long, value_delimiter = ',', default_value = "mosquitto,embedded", value_parser = ["mosquitto", "embedded"])]
    page_brokers: Vec<String>,
    /// Serve the Chromium runs' page from this directory (edgecam's `[http] web_root`)
    /// instead of the copy built into edgecam: to compare two versions of the page.
    #[arg(long)]
    web_root: Option<PathBuf>,
    /// Fresh edgecam processes for the start-up figures.
    #[arg(long, default_value_t = 5)]
    startup_runs: usize,
    /// Directory of `view.mjs` and its `node_modules` (the Chromium driver).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/e2e"))]
    e2e_dir: PathBuf,
    /// Which parts to run: `startup`, `ttff` (time to first frame), `fanout`.
    #[arg(long, value_delimiter = ',', default_value = "startup,ttff,fanout")]
    phases: Vec<String>,
    /// edgecam's `RUST_LOG` (its log goes to the work directory).
    #[arg(long, default_value = "warn,edgecam=info")]
    edgecam_log: String,
    /// Access mode of the camera in the Chromium runs: `open`, or `invite` (the page
    /// opens an invitation link, signs, verifies and logs in with its token). The load
    /// viewers always use `open`.
    #[arg(long, default_value = "open", value_parser = ["open", "invite"])]
    access: String,
    /// Keep the work directory (configs, edgecam logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Where `report.json` and `report.md` go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
}

/// The camera config of every run: the issue's source, encoder and rate.
fn camera_config(keyframe_interval_ms: u32) -> String {
    format!(
        "[camera]\nid = \"bench\"\n[video]\nsource = \"test\"\nwidth = 1280\nheight = 720\n\
         fps = 30\nbitrate_kbps = 2000\nkeyframe_interval_ms = {keyframe_interval_ms}\n\
         [audio]\nsource = \"test\"\n[access]\nmode = \"open\"\n"
    )
}

const FPS: f64 = 30.0;
const DEFAULT_KEYFRAME_MS: u32 = 2000;

/// Mosquitto and edgecam on loopback, edgecam past `READY=1`.
struct Rig {
    cam: Edgecam,
    broker_port: u16,
    http_port: u16,
    ready: Duration,
    _broker: Proc,
}

impl Rig {
    fn start(bench: &Bench, name: &str, keyframe_interval_ms: u32) -> anyhow::Result<Self> {
        let (broker_port, ws_port, http_port) = (free_port()?, free_port()?, free_port()?);
        let broker = mosquitto(&bench.dir, None, "127.0.0.1", broker_port, ws_port)?;
        let config = format!(
            "{}[signaling]\nbroker = \"mqtt://127.0.0.1:{broker_port}\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [webrtc]\nudp_bind = [\"127.0.0.1\"]\nmax_viewers = 200\n",
            camera_config(keyframe_interval_ms)
        );
        let mut cam = Edgecam::spawn(
            &bench.edgecam,
            &bench.dir,
            name,
            &config,
            None,
            &bench.args.edgecam_log,
        )?;
        let ready = cam.wait_ready(Duration::from_secs(30))?;
        Ok(Self {
            cam,
            broker_port,
            http_port,
            ready,
            _broker: broker,
        })
    }

    fn stats(&self) -> Value {
        procs::stats(self.http_port).unwrap_or_default()
    }
}

struct Bench {
    args: RunArgs,
    edgecam: PathBuf,
    dir: PathBuf,
    tck: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Bench {
    /// For `--access invite`: the `[access]` section (a secret written into the work
    /// directory) and the invitation link's fragment for the page, as `edgecam invite`
    /// would print it.
    fn invitation(&self) -> anyhow::Result<(String, String)> {
        use edgecam::access::{invite, keys};
        let secret = keys::Secret::generate().map_err(|_| anyhow::anyhow!("no randomness"))?;
        let file = self.dir.join("access-secret");
        std::fs::write(&file, secret.as_bytes())?;
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        let key = keys::ViewerKey::derive(&secret, "bench", "bench", exp);
        let link = invite::link(
            "",
            &invite::Invitation {
                broker_ws: None,
                prefix: "edgecam",
                camera: "bench",
                name: "bench",
                exp,
                key: &key,
            },
        );
        let section = format!(
            "[access]\nmode = \"invite\"\nsecret_file = \"{}\"\n",
            file.display()
        );
        Ok((section, link.trim_start_matches('#').to_owned()))
    }

    fn startup(&self) -> anyhow::Result<Startup> {
        let (mut first, mut ready) = (Vec::new(), Vec::new());
        for i in 0..self.args.startup_runs {
            let rig = Rig::start(self, &format!("startup-{i}"), DEFAULT_KEYFRAME_MS)?;
            ready.push(ms(rig.ready));
            if let Some(v) = rig.stats()["startToFirstFrameMs"].as_f64() {
                first.push(v);
            }
        }
        Ok(Startup {
            first_frame_ms: Spread::of(&first),
            ready_ms: Spread::of(&ready),
        })
    }

    fn first_frame(&self, keyframe_interval_ms: u32) -> anyhow::Result<FirstFrame> {
        let mut ff = FirstFrame {
            keyframe_interval_ms,
            ..FirstFrame::default()
        };
        if self.args.ttff_runs > 0 {
            let rig = Rig::start(
                self,
                &format!("ttff-{keyframe_interval_ms}"),
                keyframe_interval_ms,
            )?;
            // Past the encoder's first IDR, so joins depend on keyframe-on-join.
            std::thread::sleep(Duration::from_secs(3));
            let runs = self.args.ttff_runs;
            let load =
                LoadProc::spawn(rig.broker_port, &["--sequential".into(), runs.to_string()])?;
            let mut samples = Vec::new();
            for _ in 0..runs {
                let line = load.next("ttff", Duration::from_secs(40))?;
                match line["firstFrameMs"].as_f64() {
                    Some(v) => samples.push(v),
                    None => ff.load_viewer_failures.push(format!(
                        "{}: {}",
                        line["session"],
                        line.get("error")
                            .unwrap_or(&Value::from("no frame in time"))
                    )),
                }
                ff.load_viewer_idr_first += usize::from(line["firstFrameIdr"] == true);
            }
            ff.load_viewer_ms = Spread::of(&samples);
            load.quit();
        }
        if self.args.browser_runs > 0 {
            let name = format!("chromium-{keyframe_interval_ms}");
            let mut config = format!(
                "{}[webrtc]\nmax_viewers = 200\n",
                camera_config(keyframe_interval_ms)
            );
            let mut fragment = None;
            if self.args.access == "invite" {
                let (section, link) = self.invitation()?;
                config = config.replace("[access]\nmode = \"open\"\n", &section);
                fragment = Some(link);
            }
            for broker in &self.args.page_brokers {
                let visits = browser::first_frames(
                    self,
                    &format!("{name}-{broker}"),
                    &config,
                    broker == "embedded",
                    fragment.as_deref(),
                )
                .unwrap_or_else(|e| vec![vec![Err(format!("not run: {e:#}"))]]);
                let several = visits.len() > 1;
                for (k, runs) in visits.into_iter().enumerate() {
                    let label = if several {
                        format!("{broker}, visit {}", k + 1)
                    } else {
                        broker.clone()
                    };
                    ff.chromium.push(Chromium::of(&label, runs));
                }
            }
        }
        Ok(ff)
    }

    fn fanout(&self, n: usize) -> anyhow::Result<Fanout> {
        let mut rig = Rig::start(self, &format!("fanout-{n}"), DEFAULT_KEYFRAME_MS)?;
        let pid = rig.cam.proc.pid();
        let mut step = Fanout {
            viewers: n,
            ..Fanout::default()
        };
        let mut load = None;
        if n > 0 {
            let l = LoadProc::spawn(rig.broker_port, &["--viewers".into(), n.to_string()])?;
            let joined = l.next("joined", Duration::from_secs(60 + 2 * n as u64))?;
            let list = joined["viewers"].as_array().cloned().unwrap_or_default();
            let firsts: Vec<f64> = list
                .iter()
                .filter_map(|v| v["firstFrameMs"].as_f64())
                .collect();
            step.viewers_playing = firsts.len();
            step.join_first_frame_ms = Spread::of(&firsts);
            load = Some(l);
        }
        std::thread::sleep(Duration::from_secs(self.args.settle_s));
        let before = load.as_mut().map(LoadProc::snapshot).transpose()?;
        let load_pid = load.as_ref().map(|l| l.proc.pid());
        let (c0, l0, t0) = (
            cpu_ticks(pid),
            load_pid.map_or(0, cpu_ticks),
            Instant::now(),
        );
        let mut rss_max = 0;
        while t0.elapsed() < Duration::from_secs(self.args.window_s) {
            rss_max = rss_max.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(250));
            anyhow::ensure!(
                rig.cam.proc.alive(),
                "edgecam exited: {}",
                rig.cam.log_tail()
            );
        }
        let after = load.as_mut().map(LoadProc::snapshot).transpose()?;
        let dt = t0.elapsed().as_secs_f64();
        let (c1, l1) = (cpu_ticks(pid), load_pid.map_or(0, cpu_ticks));
        step.window_s = dt;
        step.cpu_pct = (c1 - c0) as f64 / self.tck / dt * 100.0;
        step.load_cpu_pct = l1.saturating_sub(l0) as f64 / self.tck / dt * 100.0;
        step.rss_mib = rss_max as f64 / 1024.0;
        if let (Some(a), Some(b)) = (before, after) {
            window_figures(&mut step, &a, &b, dt);
        }
        let lat = &rig.stats()["captureToRtpLatency"];
        if n > 0 {
            step.capture_to_rtp_p50_ms = lat["p50_ms"].as_f64();
            step.capture_to_rtp_p99_ms = lat["p99_ms"].as_f64();
            step.capture_to_rtp_count = lat["count"].as_u64();
        }
        if let Some(l) = load {
            l.quit();
        }
        Ok(step)
    }
}

/// Per-viewer fps and loss between two snapshots of the load process.
fn window_figures(step: &mut Fanout, before: &Value, after: &Value, dt: f64) {
    let empty = Vec::new();
    let a = before["viewers"].as_array().unwrap_or(&empty);
    let b = after["viewers"].as_array().unwrap_or(&empty);
    let (mut fps, mut opus) = (Vec::new(), Vec::new());
    for (va, vb) in a.iter().zip(b) {
        let d = |k: &str| {
            vb[k]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(va[k].as_u64().unwrap_or(0))
        };
        let frames = d("frames");
        fps.push(frames as f64 / dt);
        opus.push(d("opusPackets") as f64 / dt);
        step.packets_lost += d("packetsLost");
        // Frames sent in the window, from the RTP timestamp span (90 kHz clock, one
        // frame per 1/30 s): what arrived short of that was lost.
        if let (Some(ta), Some(tb)) = (va["lastTimestamp"].as_u64(), vb["lastTimestamp"].as_u64()) {
            let span = (tb as u32).wrapping_sub(ta as u32);
            let sent = (f64::from(span) / (90_000.0 / FPS)).round() as u64;
            step.frames_lost += sent.saturating_sub(frames);
        }
    }
    if !fps.is_empty() {
        step.fps_min = fps.iter().copied().reduce(f64::min);
        step.fps_mean = Some(fps.iter().sum::<f64>() / fps.len() as f64);
        step.opus_per_s = Some(opus.iter().sum::<f64>() / opus.len() as f64);
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let edgecam = match &args.edgecam {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("edgecam"),
    };
    anyhow::ensure!(
        edgecam.exists(),
        "{} not found (cargo build --release)",
        edgecam.display()
    );
    let dir = std::env::temp_dir().join(format!("edgecam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bench = Bench {
        args: args.clone(),
        edgecam,
        dir: dir.clone(),
        tck: clk_tck(),
    };
    let mut report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        setup: "videotestsrc 1280x720 30 fps + audiotestsrc, x264 (edgecam's encoder choice) 2000 kbit/s, Opus; Mosquitto on loopback".into(),
        ..Report::default()
    };
    let outcome = (|| -> anyhow::Result<()> {
        let phase = |p: &str| args.phases.iter().any(|x| x == p);
        if phase("startup") {
            eprintln!("edgecam-bench: start-up, {} runs", args.startup_runs);
            report.startup = bench.startup()?;
        }
        for &k in args.keyframe_intervals_ms.iter().filter(|_| phase("ttff")) {
            eprintln!("edgecam-bench: time to first frame, keyframe interval {k} ms");
            report.first_frame.push(bench.first_frame(k)?);
        }
        for &n in args.viewers.iter().filter(|_| phase("fanout")) {
            eprintln!("edgecam-bench: fan-out, {n} viewers");
            report.fanout.push(bench.fanout(n)?);
        }
        Ok(())
    })();
    if args.keep {
        eprintln!("edgecam-bench: work directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report.judge();
    let markdown = report.markdown();
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(
        args.out_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out_dir.join("report.md"), &markdown)?;
    println!("{markdown}");
    eprintln!(
        "edgecam-bench: wrote {}/report.json and report.md",
        args.out_dir.display()
    );
    outcome
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Load(args)) => load::run(&args),
        Some(Cmd::Soak(args)) => soak::run(&args),
        None => run(cli.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgecam-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
