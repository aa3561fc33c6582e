//! Capture mode negotiation, pure: the configured size and rate are a wish; the mode
//! is chosen from what the V4L2 device offers (formats, frame sizes, frame intervals),
//! by the rule documented on [`negotiate`] and in `docs/configuration.md`.

use crate::config::V4l2Format as FormatChoice;
use serde::Serialize;
use std::fmt::{self, Write as _};

/// A frame rate as V4L2 reports it (the inverse of a frame interval), in Hz =
/// `num / den`. Kept as a fraction so the caps ask for exactly what the device
/// offers (29.97 Hz is 30000/1001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "f64")]
pub struct FrameRate {
    /// Numerator.
    pub num: u32,
    /// Denominator (> 0).
    pub den: u32,
}

impl FrameRate {
    /// `n` Hz.
    pub fn whole(n: u32) -> Self {
        Self { num: n, den: 1 }
    }

    /// The rate in Hz.
    pub fn hz(self) -> f64 {
        f64::from(self.num) / f64::from(self.den.max(1))
    }

    /// Whether this rate is at least `fps` Hz (exact, no float rounding).
    fn at_least(self, fps: u32) -> bool {
        u64::from(self.num) >= u64::from(fps) * u64::from(self.den.max(1))
    }
}

impl From<FrameRate> for f64 {
    fn from(r: FrameRate) -> f64 {
        r.hz()
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hz = self.hz();
        if (hz - hz.round()).abs() < 0.005 {
            write!(f, "{hz:.0}")
        } else {
            write!(f, "{hz:.2}")
        }
    }
}

/// One frame size of a format, with the rates it runs at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameSize {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Frame rates offered at this size (stepwise ranges by their fastest).
    pub fps: Vec<FrameRate>,
}

/// One V4L2 capture format with its sizes and rates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceFormat {
    /// FourCC, e.g. `YUYV`, `MJPG`, `H264`.
    pub fourcc: String,
    /// Driver's description.
    pub description: String,
    /// Frame sizes (stepwise ranges reported by their maximum).
    pub sizes: Vec<FrameSize>,
}

/// The configured wish: `video.width`, `video.height`, `video.fps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wish {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Hz.
    pub fps: u32,
}

/// The kind of a V4L2 format, as edgecam handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// H.264 from the camera, passed through.
    H264,
    /// MJPEG, decoded then encoded.
    Mjpeg,
    /// Uncompressed, encoded.
    Raw,
}

/// The GStreamer `video/x-raw` format name of a raw V4L2 FourCC edgecam captures.
pub fn raw_gst_format(fourcc: &str) -> Option<&'static str> {
    Some(match fourcc {
        "YUYV" => "YUY2",
        "UYVY" => "UYVY",
        "NV12" => "NV12",
        "YU12" | "I420" => "I420",
        "YV12" => "YV12",
        "RGB3" => "RGB",
        "BGR3" => "BGR",
        _ => return None,
    })
}

/// What edgecam does with a FourCC; `None` for formats it does not capture.
pub fn kind(fourcc: &str) -> Option<FormatKind> {
    match fourcc {
        "H264" => Some(FormatKind::H264),
        // Some drivers (v4l2loopback, a few UVC bridges) name Motion-JPEG "JPEG".
        "MJPG" | "JPEG" => Some(FormatKind::Mjpeg),
        f if raw_gst_format(f).is_some() => Some(FormatKind::Raw),
        _ => None,
    }
}

/// The chosen capture mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureMode {
    /// How edgecam handles the format.
    pub kind: FormatKind,
    /// The device's FourCC.
    pub fourcc: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Frame rate asked of the device.
    pub fps: FrameRate,
}

impl fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{}@{}",
            self.fourcc, self.width, self.height, self.fps
        )
    }
}

/// Which step of the rule chose the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The wished size at the wished rate or faster.
    Exact,
    /// The wished size is not offered at the wished rate: the largest smaller size
    /// that is.
    SmallerAtRate,
    /// Nothing reaches the wished rate: the wished size at its fastest rate.
    WishedSizeSlower,
    /// Neither: the largest size not above the wish (or else the smallest size) at
    /// its fastest rate.
    Closest,
}

/// A negotiated mode and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The mode.
    pub mode: CaptureMode,
    /// The rule's step that chose it.
    pub step: Step,
    /// One line for the log: the wish, what the device offers at the wished size,
    /// and the choice.
    pub summary: String,
}

/// Why no mode was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// The device offers no size in a format edgecam captures (or in the configured
    /// `video.format`).
    #[error("the device offers no {0} mode")]
    NoFormat(String),
    /// `video.strict_mode`: the wish itself is not offered.
    #[error("video.strict_mode: {wish} is not offered ({offered})")]
    NotExact {
        /// `WxH@fps` asked for.
        wish: String,
        /// What the device offers at that size.
        offered: String,
    },
}

/// The order formats are preferred in for `video.format = "auto"`: H.264 first (no
/// decode, no encode), then raw when a hardware encoder takes it (`v4l2h264enc`: no
/// decode, and the encoder does the work), then MJPEG (USB cameras reach full rate in
/// MJPEG where raw is limited by bus bandwidth), then raw.
fn preference(kind: FormatKind, hw_encoder: bool) -> u8 {
    match (kind, hw_encoder) {
        (FormatKind::H264, _) => 0,
        (FormatKind::Raw, true) => 1,
        (FormatKind::Mjpeg, _) => 2,
        (FormatKind::Raw, false) => 3,
    }
}

struct Candidate<'a> {
    format: &'a DeviceFormat,
    kind: FormatKind,
    size: &'a FrameSize,
}

impl Candidate<'_> {
    fn fastest(&self) -> Option<FrameRate> {
        self.size
            .fps
            .iter()
            .copied()
            .max_by(|a, b| a.hz().total_cmp(&b.hz()))
    }

    /// The slowest offered rate that reaches `fps`: no more frames than wished.
    fn reaching(&self, fps: u32) -> Option<FrameRate> {
        self.size
            .fps
            .iter()
            .copied()
            .filter(|r| r.at_least(fps))
            .min_by(|a, b| a.hz().total_cmp(&b.hz()))
    }

    fn pixels(&self) -> u64 {
        u64::from(self.size.width) * u64::from(self.size.height)
    }

    fn mode(&self, fps: FrameRate) -> CaptureMode {
        CaptureMode {
            kind: self.kind,
            fourcc: self.format.fourcc.clone(),
            width: self.size.width,
            height: self.size.height,
            fps,
        }
    }
}

/// Chooses the capture mode for `wish` among `formats` (as the device lists them).
///
/// The rule, over the formats allowed by `choice` (`auto`: every format edgecam
/// captures, preferred H.264, then raw if `hw_encoder`, then MJPEG, then raw):
/// 1. the wished size at the wished rate or faster, in the most preferred format;
/// 2. else the largest size (in pixels) no wider and no taller than the wish that
///    reaches the wished rate (ties: preferred format);
/// 3. else the wished size at its fastest rate (ties: preferred format);
/// 4. else the largest size not above the wish, or failing that the smallest size, at
///    its fastest rate.
///
/// Where a size reaches the wished rate, the slowest offered rate that does is asked
/// for. With `strict`, only step 1 counts.
///
/// # Errors
/// [`ModeError::NoFormat`] when no allowed format has a size; with `strict`,
/// [`ModeError::NotExact`] when step 1 finds nothing.
pub fn negotiate(
    wish: Wish,
    formats: &[DeviceFormat],
    choice: FormatChoice,
    hw_encoder: bool,
    strict: bool,
) -> Result<Negotiated, ModeError> {
    let allowed = |k: FormatKind| match choice {
        FormatChoice::Auto => true,
        FormatChoice::H264 => k == FormatKind::H264,
        FormatChoice::Mjpeg => k == FormatKind::Mjpeg,
        FormatChoice::Raw => k == FormatKind::Raw,
    };
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for format in formats {
        let Some(kind) = kind(&format.fourcc).filter(|k| allowed(*k)) else {
            continue;
        };
        for size in format.sizes.iter().filter(|s| !s.fps.is_empty()) {
            candidates.push(Candidate { format, kind, size });
        }
    }
    // Stable: within a preference, the device's own order.
    candidates.sort_by_key(|c| preference(c.kind, hw_encoder));
    if candidates.is_empty() {
        let what = match choice {
            FormatChoice::Auto => "H.264, MJPEG or raw".to_owned(),
            other => format!("{other:?}"),
        };
        return Err(ModeError::NoFormat(what));
    }
    let wished_size =
        |c: &&Candidate<'_>| c.size.width == wish.width && c.size.height == wish.height;
    let fits = |c: &&Candidate<'_>| c.size.width <= wish.width && c.size.height <= wish.height;
    let offered = offered_at(&candidates, wish);
    let wish_text = format!("{}x{}@{}", wish.width, wish.height, wish.fps);

    let exact = candidates
        .iter()
        .filter(wished_size)
        .find_map(|c| Some((c, c.reaching(wish.fps)?)));
    let (chosen, step) = if let Some((c, fps)) = exact {
        (c.mode(fps), Step::Exact)
    } else if strict {
        return Err(ModeError::NotExact {
            wish: wish_text,
            offered,
        });
    } else if let Some((c, fps)) = candidates
        .iter()
        .filter(fits)
        .filter_map(|c| Some((c, c.reaching(wish.fps)?)))
        // max_by_key keeps the last maximum: reverse so the preferred one wins ties.
        .rev()
        .max_by_key(|(c, _)| c.pixels())
    {
        (c.mode(fps), Step::SmallerAtRate)
    } else if let Some((c, fps)) = candidates
        .iter()
        .filter(wished_size)
        .filter_map(|c| Some((c, c.fastest()?)))
        .rev()
        .max_by(|a, b| a.1.hz().total_cmp(&b.1.hz()))
    {
        (c.mode(fps), Step::WishedSizeSlower)
    } else {
        let below = candidates
            .iter()
            .filter(fits)
            .rev()
            .max_by_key(|c| c.pixels());
        let c = below
            .or_else(|| candidates.iter().min_by_key(|c| c.pixels()))
            .expect("candidates is not empty");
        let fps = c.fastest().expect("sizes without rates are skipped");
        (c.mode(fps), Step::Closest)
    };
    let summary = format!(
        "video mode: wished {wish_text}; at {}x{} the device offers {offered}; chose {chosen} ({})",
        wish.width,
        wish.height,
        match step {
            Step::Exact => "the wish",
            Step::SmallerAtRate => "largest size at the wished rate",
            Step::WishedSizeSlower => "wished size at its fastest rate",
            Step::Closest => "closest size at its fastest rate",
        }
    );
    Ok(Negotiated {
        mode: chosen,
        step,
        summary,
    })
}

/// `"YUYV up to 12.5 fps, MJPG up to 30 fps"` for the wished size, or `"nothing"`.
fn offered_at(candidates: &[Candidate<'_>], wish: Wish) -> String {
    let mut s = String::new();
    for c in candidates
        .iter()
        .filter(|c| c.size.width == wish.width && c.size.height == wish.height)
    {
        if let Some(fps) = c.fastest() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            let _ = write!(s, "{} up to {fps} fps", c.format.fourcc);
        }
    }
    if s.is_empty() {
        s.push_str("nothing");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(hz: &[(u32, u32)]) -> Vec<FrameRate> {
        hz.iter()
            .map(|&(num, den)| FrameRate { num, den })
            .collect()
    }

    /// `(width, height, rates as (num, den))` rows of a capability table.
    type Table<'a> = &'a [(u32, u32, &'a [(u32, u32)])];

    fn fmt(fourcc: &str, sizes: Table<'_>) -> DeviceFormat {
        DeviceFormat {
            fourcc: fourcc.into(),
            description: String::new(),
            sizes: sizes
                .iter()
                .map(|&(width, height, r)| FrameSize {
                    width,
                    height,
                    fps: rates(r),
                })
                .collect(),
        }
    }

    const WISH: Wish = Wish {
        width: 1280,
        height: 720,
        fps: 30,
    };

    /// vivid as the device lab loads it (`edgecam devices` in the VM): raw formats
    /// only, 1280x720 up to 12.5 fps, 640x360 up to 30.
    fn vivid() -> Vec<DeviceFormat> {
        let sizes: Table<'_> = &[
            (320, 180, &[(30, 1), (25, 1), (15, 1)]),
            (640, 360, &[(30, 1), (25, 1), (15, 1)]),
            (640, 480, &[(25, 1), (15, 1)]),
            (1280, 720, &[(25, 2), (5, 1)]),
            (1920, 1080, &[(5, 1)]),
        ];
        vec![fmt("YUYV", sizes), fmt("UYVY", sizes), fmt("NV12", sizes)]
    }

    /// A typical UVC webcam (C920-like): YUYV 720p at 10 fps, MJPEG 720p30, and H.264.
    fn uvc(with_h264: bool) -> Vec<DeviceFormat> {
        let mut v = vec![
            fmt(
                "YUYV",
                &[
                    (640, 480, &[(30, 1), (15, 1)]),
                    (1280, 720, &[(10, 1), (5, 1)]),
                ],
            ),
            fmt(
                "MJPG",
                &[
                    (640, 480, &[(30, 1)]),
                    (1280, 720, &[(30, 1), (15, 1)]),
                    (1920, 1080, &[(30, 1)]),
                ],
            ),
        ];
        if with_h264 {
            v.push(fmt(
                "H264",
                &[(1280, 720, &[(30, 1), (15, 1)]), (1920, 1080, &[(30, 1)])],
            ));
        }
        v
    }

    fn auto(formats: &[DeviceFormat]) -> Negotiated {
        negotiate(WISH, formats, FormatChoice::Auto, false, false).expect("a mode")
    }

    #[test]
    fn vivid_without_720p30_gets_the_largest_size_that_reaches_30() {
        let n = auto(&vivid());
        assert_eq!(n.step, Step::SmallerAtRate);
        assert_eq!(n.mode.to_string(), "YUYV 640x360@30");
        assert!(
            n.summary
                .contains("offers YUYV up to 12.50 fps, UYVY up to 12.50 fps"),
            "{}",
            n.summary
        );
    }

    #[test]
    fn uvc_webcam_720p30_comes_in_mjpeg_or_h264_when_offered() {
        let n = auto(&uvc(false));
        assert_eq!(
            (n.step, n.mode.to_string()),
            (Step::Exact, "MJPG 1280x720@30".into())
        );
        assert_eq!(n.mode.kind, FormatKind::Mjpeg);
        let n = auto(&uvc(true));
        assert_eq!(n.mode.to_string(), "H264 1280x720@30");
        assert_eq!(n.mode.kind, FormatKind::H264);
        // The slowest rate that reaches the wish: 15 fps asked of a 30/15 size.
        let w = Wish { fps: 12, ..WISH };
        let n = negotiate(w, &uvc(true), FormatChoice::Auto, false, false).unwrap();
        assert_eq!(n.mode.to_string(), "H264 1280x720@15");
    }

    #[test]
    fn jpeg_named_motion_jpeg_is_captured_as_mjpeg() {
        // v4l2loopback fed by a GStreamer jpegenc lists 'JPEG' (seen in the lab).
        let n = auto(&[fmt("JPEG", &[(640, 480, &[(30, 1)])])]);
        assert_eq!(n.mode.kind, FormatKind::Mjpeg);
        assert_eq!(n.mode.to_string(), "JPEG 640x480@30");
    }

    #[test]
    fn a_hardware_encoder_prefers_raw_over_mjpeg() {
        let pi_cam = vec![
            fmt("MJPG", &[(1280, 720, &[(30, 1)])]),
            fmt("YUYV", &[(1280, 720, &[(30, 1)])]),
        ];
        let n = negotiate(WISH, &pi_cam, FormatChoice::Auto, true, false).unwrap();
        assert_eq!(n.mode.kind, FormatKind::Raw);
        let n = negotiate(WISH, &pi_cam, FormatChoice::Auto, false, false).unwrap();
        assert_eq!(n.mode.kind, FormatKind::Mjpeg);
    }

    #[test]
    fn an_explicit_format_is_kept_and_nothing_reaching_the_rate_gives_the_wished_size() {
        let n = negotiate(WISH, &uvc(true), FormatChoice::Raw, false, false).unwrap();
        assert_eq!(n.mode.to_string(), "YUYV 640x480@30", "largest raw at 30");
        let slow = vec![fmt("YUYV", &[(1280, 720, &[(10, 1), (5, 1)])])];
        let n = auto(&slow);
        assert_eq!(
            (n.step, n.mode.to_string()),
            (Step::WishedSizeSlower, "YUYV 1280x720@10".into())
        );
        let only_big = vec![fmt("MJPG", &[(1920, 1080, &[(15, 1)])])];
        let n = auto(&only_big);
        assert_eq!(
            (n.step, n.mode.to_string()),
            (Step::Closest, "MJPG 1920x1080@15".into())
        );
    }

    #[test]
    fn ntsc_rates_are_kept_as_fractions() {
        let ntsc = vec![fmt(
            "MJPG",
            &[(1280, 720, &[(30_000, 1001), (15_000, 1001)])],
        )];
        let n = negotiate(
            Wish { fps: 29, ..WISH },
            &ntsc,
            FormatChoice::Auto,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            n.mode.fps,
            FrameRate {
                num: 30_000,
                den: 1001
            }
        );
        assert_eq!(n.mode.to_string(), "MJPG 1280x720@29.97");
        // 29.97 does not reach 30: the wished size at its fastest instead.
        let n = auto(&ntsc);
        assert_eq!(n.step, Step::WishedSizeSlower);
    }

    #[test]
    fn strict_mode_refuses_anything_but_the_wish() {
        assert_eq!(
            negotiate(WISH, &vivid(), FormatChoice::Auto, false, true),
            Err(ModeError::NotExact {
                wish: "1280x720@30".into(),
                offered: "YUYV up to 12.50 fps, UYVY up to 12.50 fps, NV12 up to 12.50 fps".into(),
            })
        );
        assert!(negotiate(WISH, &uvc(false), FormatChoice::Auto, false, true).is_ok());
    }

    #[test]
    fn nothing_capturable_is_an_error() {
        let odd = vec![fmt("Y10 ", &[(1280, 720, &[(30, 1)])])];
        assert!(matches!(
            negotiate(WISH, &odd, FormatChoice::Auto, false, false),
            Err(ModeError::NoFormat(_))
        ));
        assert!(matches!(
            negotiate(WISH, &uvc(false), FormatChoice::H264, false, false),
            Err(ModeError::NoFormat(_))
        ));
    }
}
