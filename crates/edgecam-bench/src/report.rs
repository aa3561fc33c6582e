//! The benchmark's results: JSON document, markdown tables and the target check.

use serde::Serialize;

/// min / p50 / p95 / max of a sample set (nearest-rank percentiles), in ms.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    /// Samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank: with fewer than 20 samples, the largest).
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `samples`; all zero when empty.
    pub fn of(samples: &[f64]) -> Self {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        Self {
            n: v.len(),
            min: v[0],
            p50: nearest_rank(&v, 0.50),
            p95: nearest_rank(&v, 0.95),
            max: v[v.len() - 1],
        }
    }

    fn cells(&self) -> String {
        if self.n == 0 {
            return "– | – | – | –".into();
        }
        format!(
            "{:.0} | {:.0} | {:.0} | {:.0}",
            self.min, self.p50, self.p95, self.max
        )
    }
}

/// Nearest-rank percentile of sorted, non-empty `v`: the smallest value with at least
/// `q` of the samples at or below it.
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// Start-up of edgecam (fresh process per run).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Startup {
    /// Process spawned → first encoded frame (edgecam's own `startToFirstFrameMs`,
    /// counted from the start of its run; the bench adds nothing to it).
    pub first_frame_ms: Spread,
    /// Process spawned → `READY=1` on the notify socket, as systemd would see it.
    pub ready_ms: Spread,
}

/// Time to first frame with one periodic keyframe interval.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FirstFrame {
    /// The encoder's periodic keyframe interval, ms.
    pub keyframe_interval_ms: u32,
    /// webrtc-rs load viewers: offer published → first complete IDR received.
    pub load_viewer_ms: Spread,
    /// Load viewers whose first access unit was an IDR with SPS/PPS.
    pub load_viewer_idr_first: usize,
    /// Load viewer joins without a first frame (timeout or error).
    pub load_viewer_failures: Vec<String>,
    /// Fresh Chromium runs, one set per broker the page reached the camera through.
    pub chromium: Vec<Chromium>,
}

/// Fresh Chromium runs of edgecam's page through one broker.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Chromium {
    /// `mosquitto` (external, Mosquitto's WebSocket listener) or `embedded` (edgecam's
    /// own rumqttd); with `--visits`, followed by `, visit N` (a returning viewer's Nth).
    pub broker: String,
    /// Offer published → first video frame presented.
    pub offer_ms: Spread,
    /// Page navigation → first video frame presented: the whole wait.
    pub page_load_ms: Spread,
    /// Each run's offer → first frame, ms, in run order, so that runs of several
    /// invocations (say, alternating access modes) can be pooled.
    pub samples_ms: Vec<f64>,
    /// Each run's page navigation → first frame, ms, in run order.
    pub page_load_samples_ms: Vec<f64>,
    /// Each run's milestones: set-up ones in ms since the offer was published, and the
    /// page's own (`page:…`) in ms since navigation started.
    pub timelines: Vec<serde_json::Value>,
    /// Median of each milestone over the runs (same keys as `timelines`).
    pub timeline_p50: std::collections::BTreeMap<String, f64>,
    /// Runs without a frame, or why Chromium could not run.
    pub failures: Vec<String>,
}

impl Chromium {
    /// The runs' results (`Ok((offer → first frame ms, timeline))`, or why a run had no
    /// frame) through `broker`.
    pub fn of(broker: &str, runs: Vec<Result<(f64, serde_json::Value), String>>) -> Self {
        let mut c = Self {
            broker: broker.to_owned(),
            ..Self::default()
        };
        let mut milestones: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for r in runs {
            match r {
                Ok((ms, timeline)) => {
                    c.samples_ms.push(ms);
                    c.page_load_samples_ms
                        .extend(timeline["pageLoadToFirstFrame"].as_f64());
                    for (k, t) in timeline.as_object().into_iter().flatten() {
                        milestones.entry(k.clone()).or_default().extend(t.as_f64());
                    }
                    c.timelines.push(timeline);
                }
                Err(e) => c.failures.push(e),
            }
        }
        c.offer_ms = Spread::of(&c.samples_ms);
        c.page_load_ms = Spread::of(&c.page_load_samples_ms);
        c.timeline_p50 = milestones
            .into_iter()
            .map(|(k, v)| (k, Spread::of(&v).p50))
            .collect();
        c
    }

    /// Whether every run played (and there were runs).
    fn complete(&self) -> bool {
        self.offer_ms.n > 0 && self.failures.is_empty()
    }
}

/// One fan-out step.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Fanout {
    /// Viewers held.
    pub viewers: usize,
    /// Viewers that got their first frame.
    pub viewers_playing: usize,
    /// Length of the measured window, s.
    pub window_s: f64,
    /// edgecam's CPU over the window, % of one core.
    pub cpu_pct: f64,
    /// edgecam's largest RSS in the window, MiB.
    pub rss_mib: f64,
    /// Lowest frames/s any viewer received in the window.
    pub fps_min: Option<f64>,
    /// Mean frames/s per viewer.
    pub fps_mean: Option<f64>,
    /// Frames sent (RTP timestamp span) but not received complete, all viewers.
    pub frames_lost: u64,
    /// Video RTP packets missing from the sequence, all viewers.
    pub packets_lost: u64,
    /// Opus packets per viewer per second (mean).
    pub opus_per_s: Option<f64>,
    /// The load process's CPU over the window, % of one core.
    pub load_cpu_pct: f64,
    /// Capture → RTP send, edgecam's histogram over the whole run: p50, ms.
    pub capture_to_rtp_p50_ms: Option<f64>,
    /// Same, p99, ms.
    pub capture_to_rtp_p99_ms: Option<f64>,
    /// Frames in that histogram (per viewer, per frame).
    pub capture_to_rtp_count: Option<u64>,
    /// Offer → first IDR of the viewers joining for this step.
    pub join_first_frame_ms: Spread,
}

/// Least-squares slope of `y` over `x`; `None` with fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

/// Cost of one more viewer: least-squares slope over the steps with ≥ 1 viewer.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Marginal {
    /// % of one core per extra viewer.
    pub cpu_pct_per_viewer: Option<f64>,
    /// MiB of RSS per extra viewer.
    pub rss_mib_per_viewer: Option<f64>,
}

impl Marginal {
    /// From the fan-out steps.
    pub fn of(steps: &[Fanout]) -> Self {
        let pts = |f: fn(&Fanout) -> f64| -> Vec<(f64, f64)> {
            steps
                .iter()
                .filter(|s| s.viewers >= 1)
                .map(|s| (s.viewers as f64, f(s)))
                .collect()
        };
        Self {
            cpu_pct_per_viewer: slope(&pts(|s| s.cpu_pct)),
            rss_mib_per_viewer: slope(&pts(|s| s.rss_mib)),
        }
    }
}

/// One target of the performance issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The target.
    pub target: String,
    /// This run's figure.
    pub measured: String,
    /// Met, missed, or not measured in this run.
    pub verdict: &'static str,
}

fn target(
    what: &str,
    goal: &str,
    measured: Option<f64>,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> Target {
    Target {
        what: what.into(),
        target: goal.into(),
        measured: measured.map_or_else(|| "not measured".into(), |m| format!("{m:.1} {unit}")),
        verdict: match measured {
            None => "–",
            Some(m) if ok(m) => "met",
            Some(_) => "missed",
        },
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Where it ran: CPU model, cores, kernel.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// Source, encoder and rate.
    pub setup: String,
    /// Start-up.
    pub startup: Startup,
    /// Time to first frame per keyframe interval.
    pub first_frame: Vec<FirstFrame>,
    /// Fan-out steps.
    pub fanout: Vec<Fanout>,
    /// Cost of one more viewer.
    pub marginal: Marginal,
    /// The targets against this run.
    pub targets: Vec<Target>,
}

impl Report {
    /// Fills [`Report::marginal`] and [`Report::targets`] from the measurements.
    pub fn judge(&mut self) {
        self.marginal = Marginal::of(&self.fanout);
        let mut t = Vec::new();
        for (ff, c) in self
            .first_frame
            .iter()
            .flat_map(|ff| ff.chromium.iter().map(move |c| (ff, c)))
        {
            let (k, b) = (ff.keyframe_interval_ms, &c.broker);
            let measured = |x: f64| c.complete().then_some(x);
            t.push(target(
                &format!("Chromium page load → first frame p50 (GOP {k} ms, {b})"),
                "≤ 400 ms",
                measured(c.page_load_ms.p50),
                "ms",
                |m| m <= 400.0,
            ));
            t.push(target(
                &format!("Chromium offer → first frame p50 (GOP {k} ms, {b})"),
                "≤ 100 ms",
                measured(c.offer_ms.p50),
                "ms",
                |m| m <= 100.0,
            ));
            t.push(target(
                &format!("Chromium offer → first frame p95 (GOP {k} ms, {b})"),
                "≤ 200 ms",
                measured(c.offer_ms.p95),
                "ms",
                |m| m <= 200.0,
            ));
        }
        let with_viewers = self.fanout.iter().filter(|s| s.viewers > 0);
        let p50 = with_viewers
            .clone()
            .filter_map(|s| s.capture_to_rtp_p50_ms)
            .reduce(f64::max);
        let p99 = with_viewers
            .filter_map(|s| s.capture_to_rtp_p99_ms)
            .reduce(f64::max);
        t.push(target(
            "capture → RTP send p50 (worst step)",
            "≤ 33 ms",
            p50,
            "ms",
            |m| m <= 33.0,
        ));
        t.push(target(
            "capture → RTP send p99 (worst step)",
            "≤ 66 ms",
            p99,
            "ms",
            |m| m <= 66.0,
        ));
        t.push(target(
            "marginal CPU per viewer",
            "≤ 1 % of a core",
            self.marginal.cpu_pct_per_viewer,
            "%",
            |m| m <= 1.0,
        ));
        if let Some(top) = self
            .fanout
            .iter()
            .filter(|s| s.viewers > 0)
            .max_by_key(|s| s.viewers)
        {
            let all_playing = top.viewers_playing == top.viewers;
            t.push(target(
                &format!("lowest fps at {} viewers", top.viewers),
                "≥ 29 fps",
                top.fps_min.filter(|_| all_playing).or(Some(0.0)),
                "fps",
                |m| m >= 29.0,
            ));
            t.push(target(
                &format!("frames lost at {} viewers", top.viewers),
                "0",
                Some(top.frames_lost as f64),
                "frames",
                |m| m == 0.0,
            ));
        }
        let one = self
            .fanout
            .iter()
            .find(|s| s.viewers == 1)
            .map(|s| s.rss_mib);
        t.push(target("RSS with 1 viewer", "≤ 40 MiB", one, "MiB", |m| {
            m <= 40.0
        }));
        t.push(target(
            "RSS per extra viewer",
            "≤ 1 MiB",
            self.marginal.rss_mib_per_viewer,
            "MiB",
            |m| m <= 1.0,
        ));
        let start = (self.startup.first_frame_ms.n > 0).then_some(self.startup.first_frame_ms.max);
        t.push(target(
            "start → first encoded frame (max)",
            "≤ 1500 ms",
            start,
            "ms",
            |m| m <= 1500.0,
        ));
        self.targets = t;
    }

    /// The report as markdown tables.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### edgecam benchmark\n\n- machine: {}\n- setup: {}\n- command: `{}`\n\n",
            self.machine, self.setup, self.command
        );
        s += "#### Start-up (fresh process each run)\n\n| | runs | min | p50 | p95 | max (ms) |\n|---|---:|---:|---:|---:|---:|\n";
        for (what, sp) in [
            ("start → first encoded frame", &self.startup.first_frame_ms),
            ("start → READY=1", &self.startup.ready_ms),
        ] {
            s += &format!("| {what} | {} | {} |\n", sp.n, sp.cells());
        }
        s += "\n#### Time to first frame (offer published → first frame)\n\n| viewer | keyframe interval | runs | min | p50 | p95 | max (ms) | notes |\n|---|---:|---:|---:|---:|---:|---:|---|\n";
        for ff in &self.first_frame {
            s += &format!(
                "| webrtc-rs load viewer (first complete IDR) | {} ms | {} | {} | {}/{} started at an IDR with SPS/PPS{} |\n",
                ff.keyframe_interval_ms,
                ff.load_viewer_ms.n,
                ff.load_viewer_ms.cells(),
                ff.load_viewer_idr_first,
                ff.load_viewer_ms.n,
                failures(&ff.load_viewer_failures),
            );
            for c in &ff.chromium {
                for (what, sp) in [
                    ("offer → first frame presented", &c.offer_ms),
                    ("page load → first frame presented", &c.page_load_ms),
                ] {
                    s += &format!(
                        "| Chromium through {}, fresh browser each run: {what} | {} ms | {} | {} | {} |\n",
                        c.broker,
                        ff.keyframe_interval_ms,
                        sp.n,
                        sp.cells(),
                        failures(&c.failures).trim_start_matches("; "),
                    );
                }
            }
        }
        for ff in &self.first_frame {
            for c in ff.chromium.iter().filter(|c| !c.timeline_p50.is_empty()) {
                s += &format!(
                    "\n##### Chromium timeline through {} (keyframe interval {} ms), medians\n\n{}",
                    c.broker,
                    ff.keyframe_interval_ms,
                    timeline_table(&c.timeline_p50)
                );
            }
        }
        s += "\n#### Fan-out (steady window)\n\n| viewers | playing | edgecam CPU % of one core | edgecam RSS MiB | fps per viewer min / mean | frames lost | RTP packets lost | Opus pkt/s per viewer | capture→RTP p50 / p99 ms | load process CPU % | join → first IDR p50 / max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
        for f in &self.fanout {
            s += &format!(
                "| {} | {} | {:.1} | {:.1} | {} / {} | {} | {} | {} | {} / {} | {:.1} | {} |\n",
                f.viewers,
                f.viewers_playing,
                f.cpu_pct,
                f.rss_mib,
                opt(f.fps_min),
                opt(f.fps_mean),
                f.frames_lost,
                f.packets_lost,
                opt(f.opus_per_s),
                opt(f.capture_to_rtp_p50_ms),
                opt(f.capture_to_rtp_p99_ms),
                f.load_cpu_pct,
                if f.join_first_frame_ms.n == 0 {
                    "–".to_owned()
                } else {
                    format!(
                        "{:.0} / {:.0}",
                        f.join_first_frame_ms.p50, f.join_first_frame_ms.max
                    )
                },
            );
        }
        s += &format!(
            "\nMarginal cost per extra viewer (least squares over the steps with ≥ 1 viewer): CPU {} % of one core, RSS {} MiB.\n",
            self.marginal
                .cpu_pct_per_viewer
                .map_or("–".into(), |v| format!("{v:.2}")),
            self.marginal
                .rss_mib_per_viewer
                .map_or("–".into(), |v| format!("{v:.2}")),
        );
        s += "\n#### Targets\n\n| what | target | measured | verdict |\n|---|---|---:|---|\n";
        for t in &self.targets {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                t.what, t.target, t.measured, t.verdict
            );
        }
        s
    }
}

/// The page's milestones (`page:…`, ms since navigation) then the set-up ones (ms since
/// the offer, shifted onto the navigation clock by the median `page:offerSent`), each
/// with the step from the one before, in time order.
fn timeline_table(p50: &std::collections::BTreeMap<String, f64>) -> String {
    let offer_at = p50.get("page:offerSent").copied();
    let mut rows: Vec<(String, f64, &'static str)> = Vec::new();
    for (k, &v) in p50 {
        match k.strip_prefix("page:") {
            Some(name) => rows.push((name.to_owned(), v, "page")),
            None if k == "pageLoadToFirstFrame" => {}
            None => {
                if let Some(o) = offer_at {
                    rows.push((k.clone(), o + v, "offer"));
                }
            }
        }
    }
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut s =
        "| milestone | clock | ms since navigation | step ms |\n|---|---|---:|---:|\n".to_owned();
    let mut last = 0.0;
    for (name, at, clock) in rows {
        s += &format!("| {name} | {clock} | {at:.0} | {:.0} |\n", at - last);
        last = at;
    }
    s
}

fn failures(list: &[String]) -> String {
    if list.is_empty() {
        String::new()
    } else {
        format!("; {} failed: {}", list.len(), list.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Spread::of(&[5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0]);
        assert_eq!(
            (s.n, s.min, s.p50, s.p95, s.max),
            (10, 1.0, 5.0, 10.0, 10.0)
        );
        let s = Spread::of(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!((s.p50, s.p95), (50.0, 95.0));
        assert_eq!(Spread::of(&[]).n, 0);
    }

    #[test]
    fn slope_is_least_squares() {
        assert_eq!(slope(&[(1.0, 10.0), (11.0, 15.0)]), Some(0.5));
        assert_eq!(slope(&[(1.0, 10.0)]), None);
        let s = slope(&[(1.0, 1.0), (2.0, 2.1), (3.0, 2.9)]).unwrap();
        assert!((s - 0.95).abs() < 1e-9, "{s}");
    }

    #[test]
    fn targets_say_missed_and_not_measured() {
        let mut r = Report {
            fanout: vec![
                Fanout {
                    viewers: 1,
                    viewers_playing: 1,
                    cpu_pct: 20.0,
                    rss_mib: 30.0,
                    fps_min: Some(30.0),
                    ..Fanout::default()
                },
                Fanout {
                    viewers: 11,
                    viewers_playing: 11,
                    cpu_pct: 40.0,
                    rss_mib: 40.0,
                    fps_min: Some(28.0),
                    ..Fanout::default()
                },
            ],
            ..Report::default()
        };
        r.judge();
        let v = |what: &str| {
            r.targets
                .iter()
                .find(|t| t.what.starts_with(what))
                .unwrap()
                .verdict
        };
        assert_eq!(v("marginal CPU"), "missed"); // 2 % per viewer
        assert_eq!(v("lowest fps"), "missed");
        assert_eq!(v("RSS with 1 viewer"), "met");
        assert_eq!(v("start → first"), "–");
    }
}
