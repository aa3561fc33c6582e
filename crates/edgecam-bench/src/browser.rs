//! Time to first frame in Debian's Chromium: edgecam and Mosquitto in one network
//! namespace, a fresh headless Chromium per run in another (Chromium does not gather
//! loopback candidates, so the two talk over a veth pair the bench creates). The page is
//! edgecam's own viewer (`web/`), driven by `tests/e2e/view.mjs` (playwright-core); it
//! reports offer published → first video frame presented (`requestVideoFrameCallback`).

#[allow(dead_code)] // Shared with the test suite, which uses all of it.
use crate::Bench;
use crate::procs::{Edgecam, mosquitto};
use edgecam_testkit::netns::{self, NetPair};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MQTT_PORT: u16 = 1883;
const WS_PORT: u16 = 8083;
const HTTP_PORT: u16 = 8080;

/// One Chromium sample: offer → first frame presented in ms, with the page's set-up
/// milestones (`timeline`: ms since the offer, e.g. `answer`, `ice-connected`,
/// `pc-connected`), or why there is none.
pub type Sample = Result<(f64, Value), String>;

/// Runs `--browser-runs` fresh browsers against an edgecam whose config is
/// `camera_config` (the `[signaling]` or `[broker]`, and `[http]` sections are added
/// here), with the driver from `--e2e-dir`. The page reaches the camera through a
/// Mosquitto beside it, or with `embedded` through edgecam's own broker.
///
/// With `--visits N` each run is a returning viewer: N visits one after another in one
/// browser profile, the browser closed and opened again between them. The result has
/// one list of samples per visit (the first visit's browser starts with an empty
/// profile).
///
/// # Errors
/// When the namespaces, broker or edgecam cannot be set up (needs root).
pub fn first_frames(
    bench: &Bench,
    name: &str,
    camera_config: &str,
    embedded: bool,
    fragment: Option<&str>,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let (e2e, dir) = (bench.args.e2e_dir.as_path(), bench.dir.as_path());
    anyhow::ensure!(
        e2e.join("node_modules/playwright-core").exists(),
        "{} has no node_modules/playwright-core (scripts/setup.sh --test installs it)",
        e2e.display()
    );
    let net = NetPair::new().map_err(|e| anyhow::anyhow!("network namespaces (root): {e}"))?;
    // A viewer's machine has a default route. Without one, Chromium finds no network to
    // gather on, signals no host candidate and checks from its "any address" port only
    // after a ~150 ms fallback: a cost no real viewer pays. The route ends in the
    // camera namespace, which forwards nowhere.
    netns::ip(&[
        "-n",
        &net.viewer,
        "route",
        "add",
        "default",
        "via",
        &net.camera_ip,
    ])
    .map_err(|e| anyhow::anyhow!("default route in the viewer namespace: {e}"))?;
    let web_root = bench
        .args
        .web_root
        .as_ref()
        .map(|d| format!("web_root = {:?}\n", d.display().to_string()))
        .unwrap_or_default();
    let (_broker, config) = if embedded {
        // The page finds the WebSocket listener by its port in `/config.json`.
        let config = format!(
            "{camera_config}[broker]\nlisten = \"127.0.0.1:{MQTT_PORT}\"\n\
             ws_listen = \"0.0.0.0:{WS_PORT}\"\n[http]\nlisten = \"0.0.0.0:{HTTP_PORT}\"\n{web_root}"
        );
        (None, config)
    } else {
        let broker = mosquitto(dir, Some(&net.camera), "0.0.0.0", MQTT_PORT, WS_PORT)?;
        let config = format!(
            "{camera_config}[signaling]\nbroker = \"mqtt://127.0.0.1:{MQTT_PORT}\"\n\
             [http]\nlisten = \"0.0.0.0:{HTTP_PORT}\"\nbroker_ws_url = \"ws://{}:{WS_PORT}\"\n{web_root}",
            net.camera_ip
        );
        (Some(broker), config)
    };
    let mut cam = Edgecam::spawn(
        &bench.edgecam,
        dir,
        name,
        &config,
        Some(&net.camera),
        &bench.args.edgecam_log,
    )?;
    cam.wait_ready(Duration::from_secs(30))?;
    let url = format!(
        "http://{}:{HTTP_PORT}/?camera=bench{}",
        net.camera_ip,
        fragment.map(|f| format!("#{f}")).unwrap_or_default()
    );
    let visits = bench.args.visits.max(1);
    let mut by_visit = vec![Vec::new(); visits];
    for i in 0..bench.args.browser_runs {
        // A fresh profile each run: nothing cached from the last one.
        let profile = dir.join(format!("chromium-{name}-{i}"));
        for samples in &mut by_visit {
            samples.push(one_visit(&net.viewer, e2e, &profile, &url, visits > 1));
        }
        let _ = std::fs::remove_dir_all(&profile);
    }
    Ok(by_visit)
}

/// One page load in Chromium with `profile`; kept as the browser's own profile (HTTP
/// and code caches on disk) when `keep_profile`.
fn one_visit(ns: &str, e2e: &Path, profile: &Path, url: &str, keep_profile: bool) -> Sample {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "node"])
        .arg(e2e.join("view.mjs"))
        .args(["--url", url, "--timeout-ms", "30000", "--user-data-dir"])
        .arg(profile)
        .args(["--keep-profile", if keep_profile { "1" } else { "0" }])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("node: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "driver printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    match result["stats"]["firstFrameMs"].as_f64() {
        Some(ms) if result["ok"] == true => {
            let mut timeline = result["stats"]["timeline"].clone();
            if let (Some(t), Some(page)) = (
                timeline.as_object_mut(),
                result["stats"]["pageToFirstFrameMs"].as_f64(),
            ) {
                // Not since the offer: since navigation started (broker connect included).
                t.insert("pageLoadToFirstFrame".into(), page.round().into());
            }
            // The page's own milestones, since navigation: `page:configLoaded`, …
            if let (Some(t), Some(marks)) = (
                timeline.as_object_mut(),
                result["stats"]["page"].as_object(),
            ) {
                for (k, v) in marks {
                    t.insert(format!("page:{k}"), v.clone());
                }
            }
            Ok((ms, timeline))
        }
        _ => Err(format!(
            "no frame: {}; page log: {}; console: {}",
            result.get("error").unwrap_or(&result["stats"]),
            result["log"],
            result["console"]
        )),
    }
}
