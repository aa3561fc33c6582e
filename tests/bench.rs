//! Benchmarks (ignored by default; they measure, they do not assert targets):
//!
//! ```sh
//! cargo test --release --test bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - `fanout`: edgecam (its own process) streams 1280x720 30 fps test source + tone
//!   (x264, 2 Mbit/s) to N webrtc-rs load viewers in this process; reports edgecam's CPU
//!   (% of one core, from /proc/<pid>/stat) and RSS, frames per viewer per second, and
//!   the capture→RTP-send latency edgecam reports at /api/stats. N from
//!   `EDGECAM_BENCH_VIEWERS` (default `0,1,10`), window from `EDGECAM_BENCH_SECS` (20).
//! - `browser_first_frame`: offer published → first frame presented in a fresh headless
//!   Chromium each run (`EDGECAM_BENCH_RUNS`, default 10), with the default 2 s and a
//!   10 s periodic keyframe interval.

mod common;

use common::browser::run_browser;
use common::netns::NetPair;
use common::viewer::{Viewer, wait_status};
use common::{Edgecam, Mosquitto, free_port};
use std::time::{Duration, Instant};

fn clk_tck() -> f64 {
    // SAFETY-free: sysconf via getconf keeps this test free of libc bindings.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn self_cpu_ticks() -> u64 {
    cpu_ticks(std::process::id())
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn fanout() {
    let secs: u64 = std::env::var("EDGECAM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let tck = clk_tck();
    println!(
        "\n| viewers | edgecam CPU % of one core | edgecam RSS MiB | frames/s per viewer (min) | load-process CPU % | capture→RTP p50 / p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in env_list("EDGECAM_BENCH_VIEWERS", "0,1,10") {
        let broker = Mosquitto::start();
        let http = free_port();
        let config = format!(
            "[camera]\nid = \"bench\"\n[video]\nsource = \"test\"\nwidth = 1280\nheight = 720\nfps = 30\nbitrate_kbps = 2000\n\
             [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:{}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[webrtc]\nudp_bind = [\"127.0.0.1\"]\nmax_viewers = 200\n",
            broker.port
        );
        let cam = Edgecam::start(&config);
        let pid = cam.pid().expect("pid");
        wait_status(broker.port, "bench", Duration::from_secs(20), |s| {
            s["state"] == "online"
        })
        .await;
        let mut viewers = Vec::new();
        for i in 0..n {
            viewers
                .push(Viewer::connect_with(broker.port, "bench", &format!("load{i}"), false).await);
        }
        for v in &viewers {
            let (ok, r) = v
                .wait_until(Duration::from_secs(30), |r| r.video_frames >= 10)
                .await;
            assert!(ok, "viewer {} did not start: {r:?}", v.session);
        }
        tokio::time::sleep(Duration::from_secs(3)).await; // settle
        let start_frames: Vec<u64> = viewers.iter().map(|v| v.report().video_frames).collect();
        let (c0, s0, t0) = (cpu_ticks(pid), self_cpu_ticks(), Instant::now());
        let mut rss_max = 0;
        while t0.elapsed() < Duration::from_secs(secs) {
            rss_max = rss_max.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let dt = t0.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(pid) - c0) as f64 / tck / dt * 100.0;
        let load_cpu = (self_cpu_ticks() - s0) as f64 / tck / dt * 100.0;
        let fps_min = viewers
            .iter()
            .zip(&start_frames)
            .map(|(v, s)| (v.report().video_frames - s) as f64 / dt)
            .fold(f64::INFINITY, f64::min);
        let stats: serde_json::Value = get_stats(http).await;
        let lat = &stats["captureToRtpLatency"];
        println!(
            "| {n} | {cpu:.1} | {:.1} | {} | {load_cpu:.1} | {} / {} |",
            rss_max as f64 / 1024.0,
            if n == 0 {
                "–".to_owned()
            } else {
                format!("{fps_min:.1}")
            },
            lat["p50_ms"],
            lat["p99_ms"]
        );
        for v in &viewers {
            v.bye().await;
        }
        drop(viewers);
        drop(cam);
        drop(broker);
    }
}

/// edgecam's `/api/stats` document: one HTTP/1.0 GET over a TcpStream (the test needs no
/// HTTP client for a single request).
async fn get_stats(port: u16) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("stats port");
    s.write_all(b"GET /api/stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_default()
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "n={} min {:.0} / p50 {:.0} / p95 {:.0} / max {:.0} ms",
        v.len(),
        v[0],
        pct(0.5),
        pct(0.95),
        v[v.len() - 1]
    )
}

#[test]
#[ignore = "benchmark: run explicitly"]
fn browser_first_frame() {
    let runs = env_list("EDGECAM_BENCH_RUNS", "10")
        .first()
        .copied()
        .unwrap_or(10);
    for keyframe_ms in [2000, 10_000] {
        let net = NetPair::new().expect("network namespaces (needs root)");
        let config = format!(
            "[camera]\nid = \"bench\"\n[video]\nsource = \"test\"\nwidth = 1280\nheight = 720\nfps = 30\n\
             bitrate_kbps = 2000\nkeyframe_interval_ms = {keyframe_ms}\n[audio]\nsource = \"test\"\n[http]\nlisten = \"0.0.0.0:8080\"\n"
        );
        let _cam = Edgecam::start_in(Some(&net.camera), Some(&config));
        let mut samples = Vec::new();
        for i in 0..runs {
            let r = run_browser(
                &net,
                &format!("http://{}:8080/?camera=bench", net.camera_ip),
                &format!("bench-{keyframe_ms}-{i}"),
            );
            assert_eq!(r["ok"], true, "{r:#}");
            samples.push(r["stats"]["firstFrameMs"].as_f64().expect("firstFrameMs"));
        }
        println!(
            "\noffer → first frame presented in Chromium, keyframe interval {keyframe_ms} ms: {}",
            summary(samples)
        );
    }
}
