//! Viewers on real (shaped) links: Chromium in its own namespace, the camera → viewer
//! direction limited with `tc tbf` or thinned with an nftables `numgen random` drop on
//! the camera's end of the veth (this kernel has no `sch_netem`). The camera's
//! per-viewer bandwidth estimate (GCC over TWCC) moves the viewer between the ladder's
//! rungs at an IDR on the same SSRC, and NACKed packets are resent within a budget.
//!
//! Each case prints its figures. Asserted are the thresholds for freezes and
//! the rung reached; frame rates and timings are reported (`docs/performance.md`).

mod common;

use common::browser::Browser;
use common::netns::NetPair;
use common::{Edgecam, Mosquitto};
use edgecam::media::shed;
use serde_json::Value;
use std::time::Duration;

/// How long after playback starts the measured window begins (the issue's "after the
/// first 5 s"), and how long it lasts.
const SETTLE: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(15);

/// An open camera in `net.camera` (720p30 test pattern at 2000 kbit/s, a low rung of
/// 640x360 at 500 kbit/s), on its Mosquitto, serving the page on port 8080.
fn camera(net: &NetPair) -> Edgecam {
    let config = format!(
        "[camera]\nid = \"porch\"\nname = \"Porch\"\n[access]\nmode = \"open\"\n\
         [video]\nsource = \"test\"\nwidth = 1280\nheight = 720\nbitrate_kbps = 2000\n\
         low_bitrate_kbps = 500\nlow_width = 640\nstamp_capture_time = true\n\
         [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [http]\nlisten = \"0.0.0.0:8080\"\nbroker_ws_url = \"ws://{}:9001\"\n",
        net.camera_ip
    );
    Edgecam::start_in(Some(&net.camera), Some(&config))
}

/// What Chromium saw in the window after [`SETTLE`].
#[derive(Debug)]
struct Window {
    fps: f64,
    freezes: u64,
    frozen_s: f64,
    /// The longest freeze after settling, s (from the 500 ms series: a sample's added
    /// freeze time over its added freezes).
    longest_freeze_s: f64,
    width: u64,
    height: u64,
    jitter_buffer_ms: f64,
    nacks: u64,
    /// Packets Chromium received on the RTX stream.
    rtx: u64,
    lost: u64,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} fps, {}x{}, {} freezes ({:.2} s, longest {:.2} s), jitter buffer {:.0} ms, {} NACKs, {} RTX packets, {} packets lost",
            self.fps,
            self.width,
            self.height,
            self.freezes,
            self.frozen_s,
            self.longest_freeze_s,
            self.jitter_buffer_ms,
            self.nacks,
            self.rtx,
            self.lost
        )
    }
}

/// The longest single freeze after `settled`, s, from Chromium's figures every 500 ms
/// (`[ms, framesDecoded, freezeCount, totalFreezesDuration, …]`).
fn longest_freeze(settled: &Value, series: &Value) -> f64 {
    let at = |v: &Value, i: usize| v.get(i).and_then(Value::as_f64).unwrap_or(0.0);
    let mut prev = (
        settled["freezeCount"].as_f64().unwrap_or(0.0),
        settled["totalFreezesDuration"].as_f64().unwrap_or(0.0),
    );
    let mut longest = 0.0f64;
    for row in series.as_array().into_iter().flatten() {
        let (count, total) = (at(row, 2), at(row, 3));
        if count > prev.0 {
            longest = longest.max((total - prev.1) / (count - prev.0));
            prev = (count, total);
        }
    }
    longest
}

/// The window between the figures `SETTLE` into the hold and those at its end.
fn window(settled: &Value, last: &Value, series: &Value) -> Window {
    let d = |k: &str| last[k].as_f64().unwrap_or(0.0) - settled[k].as_f64().unwrap_or(0.0);
    Window {
        fps: d("framesDecoded") / WINDOW.as_secs_f64(),
        freezes: d("freezeCount").max(0.0) as u64,
        frozen_s: d("totalFreezesDuration"),
        longest_freeze_s: longest_freeze(settled, series),
        width: last["width"].as_u64().unwrap_or(0),
        height: last["height"].as_u64().unwrap_or(0),
        jitter_buffer_ms: last["jitterBufferMs"].as_f64().unwrap_or(0.0),
        nacks: d("nackCount").max(0.0) as u64,
        rtx: d("retransmittedPacketsReceived").max(0.0) as u64,
        lost: d("packetsLost").max(0.0) as u64,
    }
}

/// The link between camera and viewer.
#[derive(Debug, Clone, Copy)]
enum Link {
    Clean,
    /// Rate limit, kbit/s.
    Rate(u32),
    /// Random loss of the camera's UDP, percent.
    Loss(u32),
    /// A round-trip time (ms, half each way through `edgecam_testkit::delay`) and
    /// random loss of the camera's UDP (percent).
    Delayed {
        rtt_ms: u64,
        loss: u32,
    },
}

/// What a case measured: the window, glass-to-glass p95 (ms), and the camera's log.
struct Case {
    w: Window,
    glass_p95_ms: Option<f64>,
    log: String,
}

impl Case {
    /// The session's closing line with its resends and refusals (`peer::retransmit`).
    fn resends(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.contains("resends:"))
            .collect()
    }

    fn switches(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.contains("switched from the"))
            .collect()
    }
}

/// Links slower than this (kbit/s) are shaped once the picture plays.
const SLOW_PAGE_KBIT: u32 = 600;

/// One case at a time: two Chromiums and two cameras on two cores would measure the
/// machine, not the link.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Plays on `link` for [`SETTLE`] + [`WINDOW`] and prints the window's figures.
fn play(link: Link, name: &str) -> Case {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let net = match link {
        Link::Delayed { rtt_ms, .. } => NetPair::with_delay(Duration::from_millis(rtt_ms / 2)),
        _ => NetPair::new(),
    }
    .expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let mut cam = camera(&net);
    match link {
        Link::Clean => {}
        // Below 0.6 Mbit/s the page itself did not load within the driver's 5 s
        // while it carried MQTT.js (340 KB); such a link starts once the picture
        // plays (below). Not re-measured with the 75 KB page.
        Link::Rate(kbit) if kbit < SLOW_PAGE_KBIT => {}
        Link::Rate(kbit) => net.shape(Some(kbit)).expect("tc tbf on the camera's end"),
        // Loss starts once the picture plays (below): with 5 % of the handshake's
        // packets dropped, webrtc-rs's DTLS server sometimes never completed (ICE
        // connected, DTLS stuck in 45 s), which is a finding of its own, not what this
        // case measures.
        Link::Loss(_) | Link::Delayed { .. } => {}
    }
    let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
    let result = Browser::new(&net.viewer, &url, name)
        .timeout(Duration::from_secs(45))
        .hold(SETTLE + WINDOW)
        .settle(SETTLE)
        .glass()
        .run(|_| match link {
            Link::Loss(percent) | Link::Delayed { loss: percent, .. } => {
                net.drop_udp(percent).expect("nftables drop rule");
            }
            Link::Rate(kbit) if kbit < SLOW_PAGE_KBIT => {
                net.shape(Some(kbit)).expect("tc tbf on the camera's end");
            }
            _ => {}
        });
    assert_eq!(
        result["ok"], true,
        "{name}: did not keep playing: {result:#}"
    );
    let w = window(&result["settledStats"], &result["stats"], &result["series"]);
    let tc = std::process::Command::new("ip")
        .args(["netns", "exec", &net.camera, "tc", "-s", "qdisc", "show"])
        .args(["dev", &net.camera_if])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " "))
        .unwrap_or_default();
    // Stopped first: its session's closing line counts the resends and their refusals.
    cam.stop(Duration::from_secs(5));
    let case = Case {
        w,
        glass_p95_ms: result["glass"]["p95Ms"].as_f64(),
        log: cam.log_text(),
    };
    eprintln!(
        "{name} ({link:?}), {WINDOW:?} after the first {SETTLE:?}: {}",
        case.w
    );
    eprintln!("{name}: bottleneck {tc}");
    eprintln!("{name}: glass-to-glass {}", result["glass"]);
    for l in case.resends() {
        eprintln!("{name}: {l}");
    }
    // ADAPT_DUMP=1: the camera's whole log and Chromium's figures every 500 ms.
    if std::env::var_os("ADAPT_DUMP").is_some() {
        eprintln!("{}\n{}", case.log, result["series"]);
    }
    let flowing = case.log.lines().find(|l| l.contains("media flowing over"));
    for l in case.switches() {
        let after = flowing
            .and_then(|f| Some(log_time(l)? - log_time(f)?))
            .map_or(String::new(), |ms| {
                format!(" ({ms} ms after media started)")
            });
        eprintln!("{name}: {l}{after}");
    }
    case
}

/// A benchmark's setting from the environment variable `name`, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Milliseconds of the day of a log line (`[2026-12-01T00:22:50.180Z …`).
fn log_time(line: &str) -> Option<i64> {
    let t = line.get(12..24)?;
    let (h, rest) = t.split_once(':')?;
    let (m, s) = rest.split_once(':')?;
    let s: f64 = s.parse().ok()?;
    Some((h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60) * 1000 + (s * 1000.0) as i64)
}

/// The bar for a constrained viewer: no freeze longer than 500 ms after the
/// first 5 s (Chromium counts a frame gap over max(3 frames, 150 ms + the average) as
/// a freeze), and at least 25 fps.
fn assert_smooth(name: &str, c: &Case) {
    // The camera's count of resends and refusals tells a packet it would not resend
    // from one the link or the machine lost.
    let context = format!("{name} ({})", c.resends().join("; "));
    assert_window_smooth(&context, &c.w);
}

fn assert_window_smooth(name: &str, w: &Window) {
    assert!(
        w.longest_freeze_s <= 0.5,
        "{name}: frozen {:.2} s in {} freezes (longest {:.2} s) after the first 5 s: {w:?}",
        w.frozen_s,
        w.freezes,
        w.longest_freeze_s,
    );
    assert!(w.fps >= 25.0, "{name}: 25 fps or more: {w:?}");
}

#[test]
fn a_clean_link_keeps_the_main_rung() {
    let c = play(Link::Clean, "adapt-clean");
    assert!(c.switches().is_empty(), "{}", c.log);
    assert_eq!((c.w.width, c.w.height), (1280, 720), "{:?}", c.w);
    assert_smooth("clean", &c);
}

#[test]
fn a_0_8_mbit_link_gets_the_low_rung_without_freezing() {
    let c = play(Link::Rate(800), "adapt-800k");
    assert!(
        c.switches()
            .iter()
            .any(|l| l.contains("from the main 1280x720 rung to the low 640x360 rung")),
        "the viewer was moved down: {}",
        c.log
    );
    assert_eq!((c.w.width, c.w.height), (640, 360), "{:?}", c.w);
    assert_smooth("0.8 Mbit/s", &c);
}

#[test]
fn a_5_mbit_link_keeps_the_main_rung() {
    let c = play(Link::Rate(5000), "adapt-5000k");
    assert_eq!((c.w.width, c.w.height), (1280, 720), "{:?}", c.w);
    assert_smooth("5 Mbit/s", &c);
}

/// 0.4 Mbit/s carries not even the low rung (500 kbit/s + audio + headers): the viewer
/// gets the low rung's keyframes only, as its estimate allows. The picture keeps
/// changing and its latency stays bounded, rather than freezing behind a full queue.
#[test]
fn a_0_4_mbit_link_gets_keyframes_with_bounded_latency() {
    let c = play(Link::Rate(400), "adapt-400k");
    assert!(
        c.log
            .lines()
            .any(|l| l.contains("keyframes only on the low 640x360 rung")),
        "the viewer was held below the low rung: {}",
        c.log
    );
    assert_eq!((c.w.width, c.w.height), (640, 360), "{:?}", c.w);
    assert!(c.w.fps >= 1.0, "the picture keeps changing: {:?}", c.w);
    let p95 = c.glass_p95_ms.expect("glass-to-glass figures");
    assert!(p95 < 1500.0, "latency stays bounded: p95 {p95} ms");
}

#[test]
fn a_1_5_mbit_link_gets_the_low_rung_without_freezing() {
    let c = play(Link::Rate(1500), "adapt-1500k");
    assert_eq!((c.w.width, c.w.height), (640, 360), "{:?}", c.w);
    assert_smooth("1.5 Mbit/s", &c);
}

/// A lossy `link`: the browser asks for resends and the picture stays smooth.
fn assert_repaired(link: Link, name: &str, label: &str) {
    let c = play(link, name);
    assert!(c.w.nacks > 0, "the browser asked for resends: {:?}", c.w);
    assert_smooth(label, &c);
}

#[test]
fn five_percent_loss_is_repaired_by_resends() {
    assert_repaired(Link::Loss(5), "adapt-loss5", "5 % loss");
}

#[test]
fn two_percent_loss_at_40_ms_rtt_is_repaired() {
    let link = Link::Delayed {
        rtt_ms: 40,
        loss: 2,
    };
    assert_repaired(link, "adapt-rtt40-loss2", "2 % loss at 40 ms RTT");
}

#[test]
fn five_percent_loss_at_40_ms_rtt_is_repaired() {
    let link = Link::Delayed {
        rtt_ms: 40,
        loss: 5,
    };
    assert_repaired(link, "adapt-rtt40-loss5", "5 % loss at 40 ms RTT");
}

#[test]
fn one_percent_loss_at_150_ms_rtt_keeps_playing() {
    let c = play(
        Link::Delayed {
            rtt_ms: 150,
            loss: 1,
        },
        "adapt-rtt150-loss1",
    );
    assert_smooth("1 % loss at 150 ms RTT", &c);
}

/// A browser without TWCC on a 0.8 Mbit/s link: the camera estimates from its
/// receiver reports' loss and its REMB, and moves it off the main rung; the picture
/// keeps changing. (Chromium's REMB stays near 580 kbit/s here, below the low rung's
/// need of 665, and without TWCC there are no probes: it gets the low rung's
/// keyframes.)
#[test]
fn without_twcc_receiver_reports_move_the_viewer() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = camera(&net);
    net.shape(Some(800)).expect("tc tbf on the camera's end");
    let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
    let result = Browser::new(&net.viewer, &url, "adapt-no-twcc")
        .timeout(Duration::from_secs(45))
        .hold(SETTLE + WINDOW)
        .settle(SETTLE)
        .without_twcc()
        .run(|_| {});
    let log = cam.log_text();
    if std::env::var_os("ADAPT_DUMP").is_some() {
        eprintln!("{log}\n{}", result["series"]);
    }
    assert_eq!(result["ok"], true, "did not keep playing: {result:#}");
    let w = window(&result["settledStats"], &result["stats"], &result["series"]);
    eprintln!("no TWCC, 0.8 Mbit/s: {w}");
    for l in log.lines().filter(|l| l.contains("switched from the")) {
        eprintln!("no TWCC: {l}");
    }
    assert!(
        !log.contains("probe 1 measured"),
        "no probes without TWCC to measure them: {log}"
    );
    assert!(
        log.contains("from the main 1280x720 rung to the low 640x360"),
        "the viewer was moved down: {log}"
    );
    assert_eq!((w.width, w.height), (640, 360), "{w}");
    assert!(w.fps >= 1.0, "the picture keeps changing: {w}");
}

/// Two viewers at once, one on a clean link and one on 0.8 Mbit/s: each gets what its
/// own link carries, from one encode per rung.
#[test]
fn a_constrained_viewer_does_not_hold_back_a_clean_one() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let net = NetPair::new().expect("network namespaces (needs root)");
    let slow = net.second_viewer().expect("a second viewer namespace");
    // The page's broker address is the camera's on the first link: reachable from the
    // second viewer through its own link.
    common::netns::ip(&[
        "-n",
        &slow.viewer,
        "route",
        "add",
        &format!("{}/32", net.camera_ip),
        "via",
        &slow.camera_ip,
    ])
    .expect("route to the camera's first address");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = camera(&net);
    slow.shape(800).expect("tc tbf on the second link");
    let run = |ns: String, host: String, name: &'static str| {
        std::thread::spawn(move || {
            Browser::new(&ns, &format!("http://{host}:8080/?camera=porch"), name)
                .timeout(Duration::from_secs(45))
                .hold(SETTLE + WINDOW)
                .settle(SETTLE)
                .glass()
                .run(|_| {})
        })
    };
    let clean = run(net.viewer.clone(), net.camera_ip.clone(), "adapt-two-clean");
    let constrained = run(
        slow.viewer.clone(),
        slow.camera_ip.clone(),
        "adapt-two-800k",
    );
    let (clean, constrained) = (clean.join().unwrap(), constrained.join().unwrap());
    for (name, r) in [("clean", &clean), ("0.8 Mbit/s", &constrained)] {
        assert_eq!(r["ok"], true, "{name}: did not keep playing: {r:#}");
        let w = window(&r["settledStats"], &r["stats"], &r["series"]);
        eprintln!("two viewers, {name}: {w}; glass-to-glass {}", r["glass"]);
    }
    let (c, s) = (
        window(&clean["settledStats"], &clean["stats"], &clean["series"]),
        window(
            &constrained["settledStats"],
            &constrained["stats"],
            &constrained["series"],
        ),
    );
    let log = cam.log_text();
    assert_eq!(
        (c.width, c.height),
        (1280, 720),
        "the clean viewer keeps the main rung: {c}"
    );
    assert_eq!(
        (s.width, s.height),
        (640, 360),
        "the constrained one gets the low rung: {s}"
    );
    assert_eq!(
        log.matches("switched from the main 1280x720 rung to the low 640x360 rung")
            .count(),
        1,
        "only the constrained viewer was moved: {log}"
    );
    for (name, w) in [("clean", &c), ("0.8 Mbit/s", &s)] {
        assert_window_smooth(name, w);
    }
}

/// How much of one core the starved camera gets: far below what its 720p and 360p
/// x264 encoders need at 30 fps on any machine the suite runs on.
const STARVED_CORES: f64 = 0.1;

/// Waits (at most `limit`) for a line containing `needle` in the camera's log at
/// `path`, after its first `skip` bytes; returns the line.
fn wait_log(path: &std::path::Path, skip: usize, needle: &str, limit: Duration) -> Option<String> {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text
            .get(skip..)
            .and_then(|t| t.lines().find(|l| l.contains(needle)))
        {
            return Some(l.to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The camera of the starved cases, in a control group of its own (no limit yet), its
/// viewer's link shaped to 0.8 Mbit/s so that it takes the low rung.
fn starved_camera(group: &str) -> (NetPair, Mosquitto, Edgecam, edgecam_testkit::cpu::CpuLimit) {
    let net = NetPair::new().expect("network namespaces (needs root)");
    let broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = camera(&net);
    net.shape(Some(800)).expect("tc tbf on the camera's end");
    let limit = edgecam_testkit::cpu::CpuLimit::new(group).expect("a cgroup with a CPU quota");
    limit
        .add(cam.pid().expect("the camera runs"))
        .expect("the camera into the cgroup");
    (net, broker, cam, limit)
}

/// A board whose encoders cannot keep up, played by limiting the camera's process to
/// [`STARVED_CORES`] of a core while its viewer (0.8 Mbit/s) is on the low rung: the
/// low rung is withheld and the viewer moved to the main rung's keyframes; with the
/// CPU back, the rung is offered again after the hold and the viewer returns to it.
#[test]
fn starved_encoders_withhold_the_low_rung_and_offer_it_again() {
    use std::sync::{Arc, Mutex};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (net, _broker, cam, limit) = starved_camera("edgecam-adapt");
    let limit = Arc::new(limit);
    let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
    let marks: Arc<Mutex<Vec<String>>> = Arc::default();
    let (log_path, lim, steps) = (cam.log.clone(), limit.clone(), marks.clone());
    let mut driver = None;
    let result = Browser::new(&net.viewer, &url, "adapt-starved")
        .timeout(Duration::from_secs(45))
        .hold(shed::HOLD + Duration::from_secs(35))
        .run(|_| {
            let (log_path, lim, steps) = (log_path.clone(), lim.clone(), steps.clone());
            driver = Some(std::thread::spawn(move || {
                let note = |s: String| steps.lock().unwrap().push(s);
                let on_low = wait_log(
                    &log_path,
                    0,
                    "to the low 640x360 rung",
                    Duration::from_secs(20),
                );
                note(format!("on the low rung: {on_low:?}"));
                let from = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
                lim.limit(Some(STARVED_CORES)).expect("cpu quota");
                let t0 = std::time::Instant::now();
                let shed = wait_log(
                    &log_path,
                    from,
                    "withholding the low",
                    Duration::from_secs(20),
                );
                note(format!(
                    "starved; {} ms later: {shed:?}",
                    t0.elapsed().as_millis()
                ));
                lim.limit(None).expect("quota lifted");
                note(format!(
                    "quota lifted; throttled {:?} ms in all",
                    lim.throttled_ms()
                ));
            }));
        });
    if let Some(d) = driver {
        d.join().expect("the driver thread");
    }
    let log = cam.log_text();
    for m in marks.lock().unwrap().iter() {
        eprintln!("adapt-starved: {m}");
    }
    for l in log.lines().filter(|l| {
        [
            "switched from the",
            "rung(s) offered",
            "H.264 rung",
            "every frame",
            "keyframes only on",
            "measured",
        ]
        .iter()
        .any(|n| l.contains(n))
    }) {
        eprintln!("adapt-starved: {l}");
    }
    assert_eq!(result["ok"], true, "did not keep playing: {result:#}");
    let at = |needle: &str, after: usize| log.get(after..)?.find(needle).map(|i| i + after);
    let shed_at = at("withholding the low H.264 rung", 0).expect("the low rung was withheld");
    let moved_at = at(
        "switched from the low 640x360 rung to the main 1280x720",
        shed_at,
    )
    .expect("its viewer left it for the main rung or its keyframes");
    let back_at = at("offering the low H.264 rung again", moved_at)
        .expect("the rung was offered again after the hold");
    assert!(
        at("every frame again on the low 640x360 rung", back_at).is_some(),
        "the viewer returned to the low rung's every frame: {log}"
    );
    let last = &result["stats"];
    assert_eq!(
        (last["width"].as_u64(), last["height"].as_u64()),
        (Some(640), Some(360)),
        "and plays it at the end: {last}"
    );
}

/// Benchmark mode (not in the suite: it takes about a minute and reports rather than
/// asserts): what withholding the low rung buys the main rung. Once its 0.8 Mbit/s
/// viewer is on the low rung, the camera is held to `ADAPT_CORES` of a core (default
/// 0.3: enough for the main rung alone on the build machine, not for both encoders)
/// for 45 s; prints the main rung's frame rate each second from `/api/stats`, and its
/// mean while both rungs ran and after the low rung was withheld.
/// `ADAPT_CORES=0.3 cargo test --test adapt -- --ignored --nocapture starved_benchmark`.
#[test]
#[ignore = "benchmark: about a minute, reports the main rung's frame rate under a CPU quota"]
fn starved_benchmark() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cores: f64 = env_or("ADAPT_CORES", 0.3);
    let (net, _broker, cam, limit) = starved_camera("edgecam-adapt-bench");
    let stats = |ns: &str| -> Value {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "curl",
                "-s",
                "-m",
                "2",
                "http://127.0.0.1:8080/api/stats",
            ])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
    };
    let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
    let (log_path, ns) = (cam.log.clone(), net.camera.clone());
    let mut samples: Vec<(f64, bool)> = Vec::new();
    let result = Browser::new(&net.viewer, &url, "adapt-starved-bench")
        .timeout(Duration::from_secs(45))
        .hold(Duration::from_secs(75))
        .run(|_| {
            wait_log(
                &log_path,
                0,
                "to the low 640x360 rung",
                Duration::from_secs(20),
            )
            .expect("the viewer reached the low rung");
            limit.limit(Some(cores)).expect("cpu quota");
            let mut last = stats(&ns)["videoFramesPublished"].as_u64();
            let mut at = std::time::Instant::now();
            for _ in 0..45 {
                std::thread::sleep(Duration::from_secs(1));
                let s = stats(&ns);
                let now = std::time::Instant::now();
                if let (Some(a), Some(b)) = (last, s["videoFramesPublished"].as_u64()) {
                    let fps = b.saturating_sub(a) as f64 / now.duration_since(at).as_secs_f64();
                    samples.push((fps, s["rungsWithheld"].as_u64() == Some(1)));
                }
                last = s["videoFramesPublished"].as_u64();
                at = now;
            }
            limit.limit(None).expect("quota lifted");
        });
    let mean = |withheld: bool| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.1 == withheld)
            .map(|s| s.0)
            .collect();
        (v.iter().sum::<f64>() / v.len().max(1) as f64, v.len())
    };
    let series: Vec<String> = samples
        .iter()
        .map(|(fps, w)| format!("{fps:.1}{}", if *w { "w" } else { "" }))
        .collect();
    eprintln!(
        "main rung fps each second at {cores} of a core (w: low rung withheld): {}",
        series.join(" ")
    );
    let ((both, n_both), (alone, n_alone)) = (mean(false), mean(true));
    eprintln!(
        "main rung at {cores} of a core: {both:.1} fps over {n_both} s with both encoders, \
         {alone:.1} fps over {n_alone} s with the low rung withheld"
    );
    for l in cam.log_text().lines().filter(|l| l.contains("H.264 rung")) {
        eprintln!("camera: {l}");
    }
    eprintln!("ok: {}", result["ok"]);
}

/// Benchmark mode (not in the suite: it takes 60 s and reports rather than asserts):
/// the link steps 5 → 0.6 Mbit/s at 10 s and back to 5 Mbit/s at 40 s; prints when the
/// viewer was moved down and back up. `cargo test --test adapt -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: 60 s, reports the step's adaptation times"]
fn step_5_to_0_6_and_back_benchmark() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = camera(&net);
    net.shape(Some(5000)).expect("tc tbf");
    let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
    let (ns, dev) = (net.camera.clone(), net.camera_if.clone());
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log_steps = steps.clone();
    let result = Browser::new(&net.viewer, &url, "adapt-step")
        .timeout(Duration::from_secs(45))
        .hold(Duration::from_secs(60))
        .run(move |_| {
            let (ns, dev, steps) = (ns.clone(), dev.clone(), log_steps.clone());
            std::thread::spawn(move || {
                for (at, kbit) in [(10, 600), (40, 5000)] {
                    std::thread::sleep(Duration::from_secs(if at == 10 { 10 } else { 30 }));
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "exec", &ns, "tc", "qdisc", "replace", "dev", &dev])
                        .args(["root", "tbf", "rate", &format!("{kbit}kbit")])
                        .args(["burst", "15k", "latency", "100ms"])
                        .status();
                    steps
                        .lock()
                        .unwrap()
                        .push((std::time::SystemTime::now(), kbit));
                }
            });
        });
    let log = cam.log_text();
    let ms_of_day = |t: std::time::SystemTime| {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (d.as_millis() % 86_400_000) as i64
    };
    for (t, kbit) in steps.lock().unwrap().iter() {
        let at = ms_of_day(*t);
        let next = log
            .lines()
            .filter(|l| l.contains("switched from the"))
            .filter_map(|l| Some((log_time(l)?, l)))
            .find(|(ms, _)| *ms >= at);
        eprintln!(
            "step to {kbit} kbit/s: {}",
            next.map_or("no switch after it".to_owned(), |(ms, l)| format!(
                "{} ms later: {}",
                ms - at,
                l.split("] ").nth(1).unwrap_or(l)
            ))
        );
    }
    for line in log.lines().filter(|l| l.contains("probe")) {
        eprintln!("camera: {line}");
    }
    eprintln!("series: {}", result["series"]);
    assert_eq!(result["ok"], true, "{result:#}");
}

/// The camera's first DTLS flight as the server (RFC 6347 §4.2.4 flight 4, from its
/// ServerHello) is lost: the camera sends it again on its retransmit timer and the
/// viewer plays. webrtc-rs 0.21.1 stopped that timer when Chromium repeated its
/// ClientHello, and the handshake stalled with ICE connected (`vendor/README.md`).
#[test]
fn a_lost_dtls_flight_is_sent_again() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let cam = camera(&net);
    net.drop_first_dtls_handshake(2)
        .expect("nftables rule for the ServerHello");
    let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
    let started = std::time::Instant::now();
    let result = Browser::new(&net.viewer, &url, "adapt-dtls-flight-lost")
        .timeout(Duration::from_secs(20))
        .run(|_| {});
    eprintln!(
        "lost DTLS flight: ok {} after {} ms",
        result["ok"],
        started.elapsed().as_millis()
    );
    for l in cam
        .log_text()
        .lines()
        .filter(|l| l.contains("after the offer"))
    {
        eprintln!("lost DTLS flight: {l}");
    }
    assert_eq!(
        net.dtls_dropped().expect("the rule's counter"),
        1,
        "the camera's ServerHello was dropped once"
    );
    assert_eq!(
        result["ok"],
        true,
        "played once the camera sent its flight again: {result:#}\n{}",
        cam.log_text()
    );
}

/// Connections through 5 % loss of the camera's UDP from the very first packet (ICE,
/// DTLS and all): how many play within 20 s. `RUNS` (default 10) connections;
/// `cargo test --test adapt -- --ignored --nocapture handshake`.
#[test]
#[ignore = "benchmark: about 10 s per connection, reports how many connections through loss played"]
fn handshake_under_loss_benchmark() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let runs: usize = env_or("RUNS", 10);
    let mut failed = Vec::new();
    for run in 0..runs {
        let net = NetPair::new().expect("network namespaces (needs root)");
        let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
        let mut cam = camera(&net);
        net.drop_udp(5).expect("nftables drop rule");
        let url = format!("http://{}:8080/?camera=porch", net.camera_ip);
        let started = std::time::Instant::now();
        let result = Browser::new(&net.viewer, &url, "adapt-handshake-loss")
            .timeout(Duration::from_secs(20))
            .run(|_| {});
        cam.stop(Duration::from_secs(5));
        let log = cam.log_text();
        let ok = result["ok"] == true;
        eprintln!(
            "handshake run {run}: {} after {} ms",
            if ok { "played" } else { "did not play" },
            started.elapsed().as_millis()
        );
        if !ok {
            let path = std::env::temp_dir().join(format!("handshake-loss-{run}.log"));
            let _ = std::fs::write(&path, format!("{log}\n{result:#}"));
            eprintln!("  camera log and driver result: {}", path.display());
            failed.push(run);
        }
    }
    eprintln!(
        "handshake under 5 % loss: {} of {runs} played",
        runs - failed.len()
    );
}
