//! Device discovery and capability probing: V4L2 through the `v4l` crate, ALSA through
//! the `alsa` crate. Capture itself goes through GStreamer (`v4l2src`, `alsasrc`): see
//! `docs/architecture.md` for why.

use super::mode::{DeviceFormat, FrameRate, FrameSize};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use v4l::video::Capture as _;

/// One V4L2 video capture device.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct V4l2Device {
    /// Device node, e.g. `/dev/video0`.
    pub path: String,
    /// Card name.
    pub card: String,
    /// Driver name.
    pub driver: String,
    /// Capture formats.
    pub formats: Vec<DeviceFormat>,
}

/// One ALSA PCM that can capture.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlsaPcm {
    /// PCM name for `audio.device`, e.g. `hw:CARD=Loopback,DEV=0`.
    pub name: String,
    /// Description.
    pub description: String,
}

/// Lists V4L2 devices that can capture video (metadata and output-only nodes skipped).
pub fn v4l2_devices() -> Vec<V4l2Device> {
    let mut out = Vec::new();
    for node in v4l::context::enum_devices() {
        if let Ok(dev) = probe_v4l2(node.path()) {
            out.push(dev);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Whether another program is capturing from the V4L2 device at `path`: a device
/// that streams refuses a format change (`VIDIOC_S_FMT` fails with `EBUSY`), so its
/// current format is set again, which changes nothing on an idle device. Returns what
/// to tell the user, naming the holders this user may see in `/proc`; `None` when the
/// device is free or cannot be opened (the probe reports that).
pub fn v4l2_busy(path: &Path) -> Option<String> {
    use v4l::video::Capture as _;
    let dev = v4l::Device::with_path(path).ok()?;
    let format = dev.format().ok()?;
    match dev.set_format(&format) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
            let holders = holders(path);
            Some(if holders.is_empty() {
                format!(
                    "{} is busy: another program is capturing from it",
                    path.display()
                )
            } else {
                format!(
                    "{} is busy: in use by {}",
                    path.display(),
                    holders.join(", ")
                )
            })
        }
        _ => None,
    }
}

/// `pid (command)` of each process with `path` open, as far as `/proc` shows them.
fn holders(path: &Path) -> Vec<String> {
    let Ok(target) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for proc_dir in procs.flatten().take(100_000) {
        let name = proc_dir.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .take(65_536)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target))
        {
            let comm = std::fs::read_to_string(proc_dir.path().join("comm")).unwrap_or_default();
            out.push(format!("pid {pid} ({})", comm.trim()));
        }
    }
    out
}

/// Probes one device node, saying why it cannot be used.
///
/// # Errors
/// The node is missing, not accessible, not a video capture device, or failed to
/// answer `VIDIOC_QUERYCAP`; the text names the path and the cause.
pub fn probe_v4l2(path: &Path) -> Result<V4l2Device, String> {
    let dev = v4l::Device::with_path(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        std::io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied (is the user in the `video` group?)",
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    })?;
    let caps = dev
        .query_caps()
        .map_err(|e| format!("{}: not a V4L2 device ({e})", path.display()))?;
    if !caps
        .capabilities
        .contains(v4l::capability::Flags::VIDEO_CAPTURE)
    {
        return Err(format!(
            "{} ({}) cannot capture video",
            path.display(),
            caps.card
        ));
    }
    let mut formats = Vec::new();
    for desc in dev.enum_formats().unwrap_or_default() {
        let mut sizes = Vec::new();
        for size in dev.enum_framesizes(desc.fourcc).unwrap_or_default() {
            let (width, height) = match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => (d.width, d.height),
                v4l::framesize::FrameSizeEnum::Stepwise(s) => (s.max_width, s.max_height),
            };
            // A frame interval of n/d seconds is a rate of d/n Hz.
            let fps = dev
                .enum_frameintervals(desc.fourcc, width, height)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| {
                    let f = match i.interval {
                        v4l::frameinterval::FrameIntervalEnum::Discrete(f) => f,
                        v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => s.min,
                    };
                    (f.numerator > 0 && f.denominator > 0).then_some(FrameRate {
                        num: f.denominator,
                        den: f.numerator,
                    })
                })
                .collect();
            sizes.push(FrameSize { width, height, fps });
        }
        formats.push(DeviceFormat {
            fourcc: desc.fourcc.str().unwrap_or("????").to_owned(),
            description: desc.description.clone(),
            sizes,
        });
    }
    Ok(V4l2Device {
        path: path.display().to_string(),
        card: caps.card,
        driver: caps.driver,
        formats,
    })
}

/// Lists ALSA PCMs with a capture direction.
pub fn alsa_capture_pcms() -> Vec<AlsaPcm> {
    let Ok(hints) = alsa::device_name::HintIter::new_str(None, "pcm") else {
        return Vec::new();
    };
    hints
        .filter(|h| h.direction.is_none_or(|d| d == alsa::Direction::Capture))
        .filter_map(|h| {
            Some(AlsaPcm {
                name: h.name?,
                description: h.desc.unwrap_or_default().replace('\n', " "),
            })
        })
        .collect()
}

/// Whether the ALSA PCM `name` can be opened for capture now. Without any capture
/// node in `/dev/snd` it answers `false` without asking alsa-lib, which would print
/// configuration errors to stderr on a machine with no sound card.
pub fn alsa_can_capture(name: &str) -> bool {
    any_dev_node(Path::new("/dev/snd"), |n| {
        n.starts_with("pcmC") && n.ends_with('c')
    }) && alsa::pcm::PCM::new(name, alsa::Direction::Capture, true).is_ok()
}

/// Whether directory `dir` holds an entry whose name satisfies `pred` (false if `dir`
/// cannot be read).
pub fn any_dev_node(dir: &Path, pred: impl Fn(&str) -> bool) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| pred(&e.file_name().to_string_lossy()))
        })
        .unwrap_or(false)
}

/// Human-readable listing for `edgecam devices`.
pub fn render(v4l2: &[V4l2Device], pcms: &[AlsaPcm]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "V4L2 capture devices:");
    if v4l2.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for d in v4l2 {
        let _ = writeln!(s, "  {}  {} (driver {})", d.path, d.card, d.driver);
        for f in &d.formats {
            let _ = writeln!(s, "    {}  {}", f.fourcc, f.description);
            for size in &f.sizes {
                let rates: Vec<String> = size.fps.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    s,
                    "      {}x{} @ {} fps",
                    size.width,
                    size.height,
                    rates.join("/")
                );
            }
        }
    }
    let _ = writeln!(s, "ALSA capture PCMs:");
    if pcms.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for p in pcms {
        let _ = writeln!(s, "  {}  {}", p.name, p.description);
    }
    s
}
