//! Runs the browser driver (`tests/e2e/view.mjs`: Chromium, or Firefox ESR without
//! OpenH264) inside a viewer namespace.

use super::netns::NetPair;
use serde_json::Value;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Opens `url` in a fresh headless Chromium inside `net.viewer`; returns the driver's
/// JSON result (stats of the played stream) and saves `artifacts/{name}.png`.
pub fn run_browser(net: &NetPair, url: &str, name: &str) -> Value {
    let result = Browser::new(&net.viewer, url, name).run(|_| {});
    assert!(screenshot(name).exists(), "screenshot saved");
    result
}

/// The viewer page as a `file://` URL, for namespaces that cannot reach the camera's
/// own HTTP server (the page needs nothing but the broker then).
pub fn page_file_url(query: &str) -> String {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/index.html");
    format!("file://{}?{query}", page.display())
}

fn screenshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/artifacts")
        .join(format!("{name}.png"))
}

/// One run of the driver.
pub struct Browser {
    ns: String,
    url: String,
    name: String,
    timeout: Duration,
    hold: Option<Duration>,
    accept_any_cert: bool,
    talk: Option<(PathBuf, Duration)>,
    firefox: bool,
    settle: Option<Duration>,
    glass: bool,
    no_twcc: bool,
}

impl Browser {
    /// Chromium in namespace `ns` opening `url`; artifacts named `name`.
    pub fn new(ns: &str, url: &str, name: &str) -> Self {
        Self {
            ns: ns.to_owned(),
            url: url.to_owned(),
            name: name.to_owned(),
            timeout: Duration::from_secs(45),
            hold: None,
            accept_any_cert: false,
            talk: None,
            firefox: false,
            settle: None,
            glass: false,
            no_twcc: false,
        }
    }

    /// The browser's offers leave out transport-wide congestion control (its RTCP
    /// feedback and header extension), as a viewer without TWCC.
    pub fn without_twcc(mut self) -> Self {
        self.no_twcc = true;
        self
    }

    /// Measures glass-to-glass latency from the camera's capture-time stamp (`[video]
    /// stamp_capture_time`): reported as `glass` (`p50Ms`, `p95Ms`, `frames`).
    pub fn glass(mut self) -> Self {
        self.glass = true;
        self
    }

    /// With [`Browser::hold`]: also report the figures `t` into the hold
    /// (`settledStats`), to measure the window after the stream settled.
    pub fn settle(mut self, t: Duration) -> Self {
        self.settle = Some(t);
        self
    }

    /// Debian's Firefox ESR (puppeteer-core over WebDriver BiDi) instead of Chromium,
    /// with its OpenH264 plugin off: it offers VP8, VP9 and AV1 only.
    pub fn firefox(mut self) -> Self {
        self.firefox = true;
        self
    }

    /// Two-way audio (see `--talk-wav` in `view.mjs`): the fake microphone plays `wav`,
    /// the page talks for `t`, and a second page is refused meanwhile.
    pub fn talk(mut self, wav: &Path, t: Duration) -> Self {
        self.talk = Some((wav.to_owned(), t));
        self
    }

    /// Gives up on playback after `t`.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Keeps watching for `t` after playback starts (see `--hold-ms`).
    pub fn hold(mut self, t: Duration) -> Self {
        self.hold = Some(t);
        self
    }

    /// Starts Chromium with `--ignore-certificate-errors` (a test's own TLS server).
    pub fn accept_any_cert(mut self) -> Self {
        self.accept_any_cert = true;
        self
    }

    /// Runs the driver; `on_playing` is called with the `{"phase":"playing"}` line when
    /// holding. Returns the final JSON result.
    pub fn run(self, mut on_playing: impl FnMut(&Value)) -> Value {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
        std::fs::create_dir_all(dir.join("artifacts")).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "node"])
            .arg(dir.join("view.mjs"))
            .args(["--url", &self.url])
            .args(["--timeout-ms", &self.timeout.as_millis().to_string()])
            .arg("--screenshot")
            .arg(screenshot(&self.name))
            .arg("--user-data-dir")
            .arg(profile.path());
        if self.accept_any_cert {
            cmd.args(["--accept-any-cert", "1"]);
        }
        if self.firefox {
            cmd.args(["--browser", "firefox"]);
        }
        if let Some((wav, t)) = &self.talk {
            cmd.arg("--talk-wav")
                .arg(wav)
                .args(["--talk-ms", &t.as_millis().to_string()]);
        }
        if let Some(hold) = self.hold {
            cmd.args(["--hold-ms", &hold.as_millis().to_string()]);
        }
        if self.glass {
            cmd.args(["--glass", "1"]);
        }
        if self.no_twcc {
            cmd.args(["--no-twcc", "1"]);
        }
        if let Some(settle) = self.settle {
            cmd.args(["--settle-ms", &settle.as_millis().to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is installed (scripts/setup.sh --test)");
        let stdout = child.stdout.take().expect("stdout");
        let mut last = String::new();
        let mut all = String::new();
        // The driver ends by itself (its own timeout and hold bound it).
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["phase"] == "playing"
            {
                on_playing(&v);
                continue;
            }
            last = line;
        }
        let out = child.wait_with_output().expect("driver exits");
        serde_json::from_str(&last).unwrap_or_else(|_| {
            panic!(
                "browser driver printed no result.\nstdout: {all}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}
