//! Pure pipeline description: config + what the machine has ([`Probe`]) → a
//! `gst-launch`-style description with two appsinks, `video` and `audio`.
//!
//! Output contract of the `video` appsink: H.264 constrained-baseline (no B-frames),
//! Annex B byte-stream, one access unit per buffer, SPS/PPS in front of every IDR
//! (`h264parse config-interval=-1`), so a viewer can start at any keyframe.

use super::mode::{self, CaptureMode, DeviceFormat, FormatKind, ModeError, Negotiated, Wish};
use crate::config::{
    AudioConfig, AudioSource, EncoderChoice, V4l2Format, VideoConfig, VideoSource,
};
use std::fmt;

/// What this machine offers, gathered by the GStreamer adapter and the device probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `libcamerasrc` element is registered.
    pub libcamerasrc: bool,
    /// `v4l2h264enc` element is registered and its device (`/dev/video11`) exists.
    pub v4l2h264enc: bool,
    /// Formats, sizes and rates the configured V4L2 device captures; empty if the
    /// device is absent or not a capture device.
    pub v4l2: Vec<DeviceFormat>,
    /// Why the configured V4L2 device could not be probed (missing, permissions, not
    /// a capture device), when it could not.
    pub v4l2_problem: Option<String>,
    /// The configured ALSA capture device can be opened.
    pub alsa_capture: bool,
    /// The H.264 decoder element to re-encode a camera's H.264 with, when one is
    /// registered (`v4l2h264dec` with its device, `avdec_h264`, `openh264dec`).
    pub h264_decoder: Option<String>,
    /// `clockoverlay` and `timeoverlay` are registered (the `pango` plugin, Debian's
    /// `gstreamer1.0-x`): the test pattern then shows wall-clock and running time.
    pub text_overlay: bool,
    /// `vp8enc` is registered (the `vpx` plugin, Debian's `gstreamer1.0-plugins-good`).
    pub vp8enc: bool,
}

/// An extra rung of the ladder beside the main H.264 one: a smaller picture with an
/// encoder of its own, behind a valve that is open only while a viewer takes it (the
/// low H.264 rung for viewers whose link cannot carry the main one; the VP8 rung for
/// viewers whose browser offers no H.264).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Pixels (even).
    pub width: u32,
    /// Pixels (even), keeping the picture's aspect.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
}

/// The resolved video source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPlan {
    /// Test pattern.
    Test,
    /// libcamera (CSI camera).
    Libcamera,
    /// The owner's GStreamer source (`video.pipeline`), scaled and encoded.
    Pipeline,
    /// V4L2 device with the chosen format.
    V4l2(V4l2Format),
}

/// The resolved encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderPlan {
    /// Software x264.
    X264,
    /// Raspberry Pi hardware encoder.
    V4l2h264enc,
    /// The camera already delivers H.264: parse only.
    Passthrough,
}

/// How long a viewer's keyframe request may go unanswered by a passed-through camera
/// before edgecam re-encodes its H.264 instead: twice the configured keyframe
/// interval, so a camera keeping that GOP of its own is never re-encoded.
pub fn passthrough_patience(keyframe_interval_ms: u32) -> std::time::Duration {
    std::time::Duration::from_millis(2 * u64::from(keyframe_interval_ms))
}

/// The resolved audio source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioPlan {
    /// Test tone.
    Test,
    /// ALSA capture.
    Alsa,
    /// No audio.
    None,
}

/// A complete pipeline plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineDesc {
    /// Video source.
    pub video: VideoPlan,
    /// Encoder.
    pub encoder: EncoderPlan,
    /// Audio source.
    pub audio: AudioPlan,
    /// The negotiated V4L2 mode (`None` for the test pattern and libcamera).
    pub mode: Option<Negotiated>,
    /// `gst_parse_launch` description.
    pub launch: String,
    /// For a V4L2 camera: the test pattern streamed while it is unplugged, at the
    /// negotiated size and rate, with the same audio and an encoder of its own (a
    /// passthrough camera's stand-in must be encoded). `None` for other sources.
    pub fallback: Option<Box<PipelineDesc>>,
    /// For H.264 passthrough: the same camera mode decoded (`Probe::h264_decoder`) and
    /// encoded again, for a camera that ignores keyframe requests (see
    /// [`passthrough_patience`]). `None` otherwise, or without a decoder.
    pub reencode: Option<Box<PipelineDesc>>,
    /// The VP8 rung (`vp8_valve` → … → appsink `vp8`), when configured, `vp8enc` is
    /// registered and the pipeline has raw frames (or can decode the camera's H.264).
    pub vp8: Option<Rung>,
    /// The low H.264 rung (`low_valve` → … → appsink `low`, x264), when configured and
    /// the pipeline has raw frames (or can decode the camera's H.264).
    pub low: Option<Rung>,
}

impl PipelineDesc {
    /// Whether this pipeline decodes a camera's H.264 to encode it again (the
    /// `reencode` plan of a passthrough camera).
    pub fn reencodes_camera_h264(&self) -> bool {
        self.video == VideoPlan::V4l2(V4l2Format::H264) && self.encoder != EncoderPlan::Passthrough
    }

    /// The frame rate the pipeline runs at: the negotiated mode's, else the
    /// configured one, Hz (rounded).
    pub fn fps(&self, configured: u32) -> u32 {
        self.mode.as_ref().map_or(configured, |n| {
            // Realistic rates are far below u32::MAX; the cast only rounds.
            n.mode.fps.hz().round().max(1.0) as u32
        })
    }
}

impl fmt::Display for PipelineDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let video = match &self.video {
            VideoPlan::Test => "test pattern".to_owned(),
            VideoPlan::Libcamera => "libcamera".to_owned(),
            VideoPlan::Pipeline => "pipeline".to_owned(),
            VideoPlan::V4l2(fmt) => match &self.mode {
                Some(n) => format!("v4l2 ({fmt:?}) {}", n.mode),
                None => format!("v4l2 ({fmt:?})"),
            },
        };
        let audio = match self.audio {
            AudioPlan::Test => "test tone",
            AudioPlan::Alsa => "alsa",
            AudioPlan::None => "none",
        };
        let decoded = if self.reencodes_camera_h264() {
            " (re-encoding the camera's H.264)"
        } else {
            ""
        };
        write!(
            f,
            "video {video}, encoder {:?}{decoded}, audio {audio}",
            self.encoder
        )
    }
}

/// Why no pipeline can be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The configured source is not available.
    #[error("video source {0} is not available on this machine")]
    SourceMissing(&'static str),
    /// The configured V4L2 device cannot be used; the text says why.
    #[error("video source v4l2: {0}")]
    DeviceUnusable(String),
    /// No capture mode fits (see `media::mode::negotiate`). Not a `#[source]`: the
    /// text already carries it, and error chains would print it twice.
    #[error("V4L2 device: {0}")]
    Mode(ModeError),
    /// Hardware encoder requested but missing.
    #[error("encoder v4l2h264enc is not available")]
    EncoderMissing,
}

impl From<ModeError> for PlanError {
    fn from(e: ModeError) -> Self {
        Self::Mode(e)
    }
}

/// Resolves `auto` choices against `probe` and builds the description.
///
/// # Errors
/// [`PlanError`] when an explicitly configured source, format or encoder is missing.
pub fn describe(
    video: &VideoConfig,
    audio: &AudioConfig,
    probe: &Probe,
) -> Result<PipelineDesc, PlanError> {
    describe_with(video, audio, probe, true)
}

/// [`describe`], with H.264 from the camera passed through or re-encoded.
fn describe_with(
    video: &VideoConfig,
    audio: &AudioConfig,
    probe: &Probe,
    passthrough: bool,
) -> Result<PipelineDesc, PlanError> {
    let mut negotiated = None;
    let video_plan = match video.source {
        VideoSource::Test => VideoPlan::Test,
        VideoSource::Pipeline => VideoPlan::Pipeline,
        VideoSource::Libcamera if probe.libcamerasrc => VideoPlan::Libcamera,
        VideoSource::Libcamera => return Err(PlanError::SourceMissing("libcamera")),
        VideoSource::V4l2 | VideoSource::Auto if !probe.v4l2.is_empty() => {
            let wish = Wish {
                width: video.width,
                height: video.height,
                fps: video.fps,
            };
            let n = mode::negotiate(
                wish,
                &probe.v4l2,
                video.format,
                probe.v4l2h264enc,
                video.strict_mode,
            )?;
            let format = match n.mode.kind {
                FormatKind::H264 => V4l2Format::H264,
                FormatKind::Mjpeg => V4l2Format::Mjpeg,
                FormatKind::Raw => V4l2Format::Raw,
            };
            negotiated = Some(n);
            VideoPlan::V4l2(format)
        }
        VideoSource::V4l2 => {
            return Err(match &probe.v4l2_problem {
                Some(why) => PlanError::DeviceUnusable(why.clone()),
                None => PlanError::SourceMissing("v4l2"),
            });
        }
        VideoSource::Auto if probe.libcamerasrc => VideoPlan::Libcamera,
        VideoSource::Auto => VideoPlan::Test,
    };
    let encoder = match (&video_plan, video.encoder) {
        (VideoPlan::V4l2(V4l2Format::H264), _) if passthrough => EncoderPlan::Passthrough,
        (_, EncoderChoice::X264) => EncoderPlan::X264,
        (_, EncoderChoice::V4l2h264enc) if probe.v4l2h264enc => EncoderPlan::V4l2h264enc,
        (_, EncoderChoice::V4l2h264enc) => return Err(PlanError::EncoderMissing),
        (_, EncoderChoice::Auto) if probe.v4l2h264enc => EncoderPlan::V4l2h264enc,
        (_, EncoderChoice::Auto) => EncoderPlan::X264,
    };
    let audio_plan = match audio.source {
        AudioSource::Test => AudioPlan::Test,
        AudioSource::Alsa => AudioPlan::Alsa,
        AudioSource::None => AudioPlan::None,
        AudioSource::Auto if probe.alsa_capture && video_plan != VideoPlan::Test => AudioPlan::Alsa,
        AudioSource::Auto if video_plan == VideoPlan::Test => AudioPlan::Test,
        AudioSource::Auto => AudioPlan::None,
    };
    let fallback = match (&video_plan, &negotiated) {
        (VideoPlan::V4l2(_), Some(n)) => {
            let test = VideoConfig {
                source: VideoSource::Test,
                width: n.mode.width,
                height: n.mode.height,
                // Realistic rates are far below u32::MAX; the cast only rounds.
                fps: n.mode.fps.hz().round().max(1.0) as u32,
                ..video.clone()
            };
            let same_audio = AudioConfig {
                source: match audio_plan {
                    AudioPlan::Test => AudioSource::Test,
                    AudioPlan::Alsa => AudioSource::Alsa,
                    AudioPlan::None => AudioSource::None,
                },
                ..audio.clone()
            };
            Some(Box::new(describe(&test, &same_audio, probe)?))
        }
        _ => None,
    };
    let reencode = match (encoder, &probe.h264_decoder) {
        (EncoderPlan::Passthrough, Some(_)) => {
            Some(Box::new(describe_with(video, audio, probe, false)?))
        }
        _ => None,
    };
    let (src_w, src_h) = negotiated
        .as_ref()
        .map_or((video.width, video.height), |n| {
            (n.mode.width, n.mode.height)
        });
    let raw_frames = encoder != EncoderPlan::Passthrough || probe.h264_decoder.is_some();
    let vp8 = (video.vp8_bitrate_kbps > 0 && probe.vp8enc && raw_frames)
        .then(|| rung((video.vp8_width, video.vp8_bitrate_kbps), (src_w, src_h)));
    // A "low" rung at or above the main one's bitrate would never be switched to.
    let low =
        (video.low_bitrate_kbps > 0 && video.low_bitrate_kbps < video.bitrate_kbps && raw_frames)
            .then(|| rung((video.low_width, video.low_bitrate_kbps), (src_w, src_h)));
    let launch = launch_line(
        video,
        audio,
        &video_plan,
        negotiated.as_ref().map(|n| &n.mode),
        (encoder, vp8, low),
        audio_plan,
        probe,
    );
    Ok(PipelineDesc {
        video: video_plan,
        encoder,
        audio: audio_plan,
        mode: negotiated,
        launch,
        fallback,
        reencode,
        vp8,
        low,
    })
}

/// A rung `width` pixels wide at `bitrate_kbps` for a `src_w`x`src_h` picture: at
/// most the picture's width, the height keeping the aspect, both even (4:2:0 needs it).
fn rung((width, bitrate_kbps): (u32, u32), (src_w, src_h): (u32, u32)) -> Rung {
    let even = |x: u64| u32::try_from((x / 2 * 2).max(2)).unwrap_or(2);
    let width = width.min(src_w.max(2));
    let height = even(
        (u64::from(width) * u64::from(src_h) + u64::from(src_w) / 2) / u64::from(src_w.max(1)),
    );
    Rung {
        width: even(width.into()),
        height,
        bitrate_kbps,
    }
}

/// The VP8 rung's scaler, encoder and appsink, behind the `vp8_valve` that `media::gst`
/// opens while the rung's hub has subscribers. Realtime, no lag, constant bitrate, the
/// H.264 rung's keyframe spacing; the sink never holds the pipeline (`async=false`).
fn vp8_tail(rung: Rung, gop: u64) -> String {
    format!(
        "videoscale ! videoconvert ! video/x-raw,width={},height={},format=I420 \
         ! vp8enc name=vp8_encoder deadline=1 cpu-used=8 end-usage=cbr target-bitrate={} keyframe-max-dist={gop} \
         lag-in-frames=0 error-resilient=default threads=1 \
         ! appsink name=vp8 sync=false async=false max-buffers=60 drop=true",
        rung.width,
        rung.height,
        u64::from(rung.bitrate_kbps) * 1000
    )
}

/// The low H.264 rung's scaler, x264 encoder and appsink, behind the `low_valve` that
/// `media::gst` opens while the rung's hub has subscribers: the main rung's profile and
/// keyframe spacing (a viewer switches between them at an IDR, on one SSRC), one thread
/// so it never competes with the main encoder for more than a share of one core.
fn low_tail(rung: Rung, gop: u64) -> String {
    format!(
        "videoscale ! videoconvert ! video/x-raw,width={},height={},format=I420 \
         ! x264enc name=low_encoder tune=zerolatency speed-preset=ultrafast bitrate={} key-int-max={gop} bframes=0 \
         b-adapt=false byte-stream=true threads=1 ! video/x-h264,profile=constrained-baseline \
         ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name=low sync=false async=false max-buffers=60 drop=true",
        rung.width, rung.height, rung.bitrate_kbps
    )
}

/// Quotes a value for `gst_parse_launch`.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The closed gate of the snapshot branch (`media::snapshot`): it drops every buffer
/// until a snapshot is wanted, so an idle branch costs nothing.
const SNAPSHOT_VALVE: &str = "valve name=snapshot_valve drop=true";

/// The closed gate of the VP8 rung: open only while a VP8 viewer watches.
const VP8_VALVE: &str = "valve name=vp8_valve drop=true";

/// The closed gate of the low H.264 rung: open only while a viewer takes it.
const LOW_VALVE: &str = "valve name=low_valve drop=true";

/// The end of the snapshot branch. `async=false`: a sink that gets no buffer while the
/// valve is closed must not hold a non-live owner's pipeline in PAUSED.
const SNAPSHOT_JPEG: &str = "videoconvert ! jpegenc quality=85 \
     ! appsink name=snapshot sync=false async=false max-buffers=1 drop=true";

fn launch_line(
    v: &VideoConfig,
    a: &AudioConfig,
    video: &VideoPlan,
    mode: Option<&CaptureMode>,
    (encoder, vp8, low): (EncoderPlan, Option<Rung>, Option<Rung>),
    audio: AudioPlan,
    probe: &Probe,
) -> String {
    let (w, h, fps) = (v.width, v.height, v.fps);
    let size = format!("width={w},height={h},framerate={fps}/1");
    // A V4L2 source is asked for exactly the negotiated mode.
    let (mode_size, fps) = match mode {
        Some(m) => (
            format!(
                "width={},height={},framerate={}/{}",
                m.width, m.height, m.fps.num, m.fps.den
            ),
            // Keyframe spacing counts frames at the rate the camera delivers.
            (m.fps.hz().ceil().max(1.0)) as u32,
        ),
        None => (size.clone(), fps),
    };
    let device = quoted(&v.device.display().to_string());
    let source = match video {
        VideoPlan::Test => {
            // The stamp paints the Y plane of I420 frames (`media::stamp`).
            let format = if v.stamp_capture_time {
                ",format=I420"
            } else {
                ""
            };
            let pattern = format!(
                "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! video/x-raw,{size}{format}"
            );
            // The clocks make latency visible by eye; without the plugin the pattern
            // still moves, which is all a stream test needs.
            let shown = if probe.text_overlay {
                format!(
                    "{pattern} ! clockoverlay time-format=\"%H:%M:%S\" halignment=right valignment=top font-desc=\"Sans 20\" \
                     ! timeoverlay halignment=left valignment=bottom font-desc=\"Sans 16\""
                )
            } else {
                pattern
            };
            // `media::gst` paints the capture time on the buffers leaving this element.
            if v.stamp_capture_time {
                format!("{shown} ! identity name=capture_stamp")
            } else {
                shown
            }
        }
        VideoPlan::Libcamera => format!("libcamerasrc ! video/x-raw,{size},format=NV12"),
        // Whatever raw video the owner's elements produce, at the configured size and
        // rate: a network source has no nominal rate (0/1), which the encoder's GOP and
        // rate control need, so `videorate` makes one (not `drop-only`, which cannot).
        VideoPlan::Pipeline => format!(
            "{} ! videoconvert ! videoscale ! videorate ! video/x-raw,{size}",
            v.pipeline.trim()
        ),
        VideoPlan::V4l2(V4l2Format::H264) => match (encoder, &probe.h264_decoder) {
            (EncoderPlan::Passthrough, _) | (_, None) => {
                format!("v4l2src device={device} ! video/x-h264,{mode_size}")
            }
            (_, Some(decoder)) => format!(
                "v4l2src device={device} ! video/x-h264,{mode_size} ! h264parse ! {decoder}"
            ),
        },
        VideoPlan::V4l2(V4l2Format::Mjpeg) => {
            format!("v4l2src device={device} ! image/jpeg,{mode_size} ! jpegdec")
        }
        VideoPlan::V4l2(_) => match mode.and_then(|m| mode::raw_gst_format(&m.fourcc)) {
            Some(f) => format!("v4l2src device={device} ! video/x-raw,format={f},{mode_size}"),
            None => format!("v4l2src device={device} ! video/x-raw,{mode_size}"),
        },
    };
    // A short leaky queue between capture and encoder: if the encoder falls behind, drop
    // raw frames rather than stall the camera.
    let decouple = "queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream";
    let gop = (u64::from(v.keyframe_interval_ms) * u64::from(fps) / 1000).max(1);
    let encode = match encoder {
        EncoderPlan::X264 => format!(
            "{decouple} ! videoconvert ! video/x-raw,format=I420 ! x264enc name=encoder tune=zerolatency speed-preset=ultrafast \
             bitrate={} key-int-max={gop} bframes=0 b-adapt=false byte-stream=true \
             ! video/x-h264,profile=constrained-baseline ! ",
            v.bitrate_kbps
        ),
        EncoderPlan::V4l2h264enc => format!(
            "{decouple} ! videoconvert ! video/x-raw,format=I420 ! v4l2h264enc name=encoder \
             extra-controls=\"controls,repeat_sequence_header=1,video_bitrate={},h264_i_frame_period={gop},h264_profile=1\" \
             ! video/x-h264,level=(string)4,profile=constrained-baseline ! ",
            u64::from(v.bitrate_kbps) * 1000
        ),
        EncoderPlan::Passthrough => String::new(),
    };
    let parse =
        "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au";
    let video_sink = "appsink name=video sync=false max-buffers=60 drop=true";
    let video_branch = match (encoder, &probe.h264_decoder) {
        // The camera's own H.264: snapshots decode it (from the IDR the snapshot service
        // asks for), and only while one is wanted. The queue does not drop: a decoder
        // missing a frame would show mush until the next IDR.
        (EncoderPlan::Passthrough, Some(decoder)) => {
            let decode = if decoder == "avdec_h264" {
                // Pictures from before the IDR would be grey mush.
                "avdec_h264 output-corrupt=false".to_owned()
            } else {
                decoder.clone()
            };
            let decoded = |valve: &str, tail: String| {
                format!(
                    "  snapshot_tee. ! {valve} ! queue max-size-buffers=30 max-size-bytes=0 max-size-time=0 \
                     ! {decode} ! {tail}"
                )
            };
            let vp8 = vp8.map_or(String::new(), |r| decoded(VP8_VALVE, vp8_tail(r, gop)));
            let low = low.map_or(String::new(), |r| decoded(LOW_VALVE, low_tail(r, gop)));
            format!(
                "{source} ! {parse} ! tee name=snapshot_tee ! {video_sink}  \
                 snapshot_tee. ! {SNAPSHOT_VALVE} ! queue max-size-buffers=30 max-size-bytes=0 max-size-time=0 \
                 ! {decode} ! {SNAPSHOT_JPEG}{vp8}{low}"
            )
        }
        (EncoderPlan::Passthrough, None) => format!("{source} ! {parse} ! {video_sink}"),
        // Raw frames: the branch taps them in front of the encoder.
        _ => {
            // Leaky like the encoder's queue: a VP8 encoder that falls behind loses
            // frames of its own rung, never the H.264 rung's.
            let vp8 = vp8.map_or(String::new(), |r| {
                format!(
                    "  snapshot_tee. ! {VP8_VALVE} ! {decouple} ! {}",
                    vp8_tail(r, gop)
                )
            });
            let low = low.map_or(String::new(), |r| {
                format!(
                    "  snapshot_tee. ! {LOW_VALVE} ! {decouple} ! {}",
                    low_tail(r, gop)
                )
            });
            format!(
                "{source} ! tee name=snapshot_tee ! {encode}{parse} ! {video_sink}  \
                 snapshot_tee. ! {SNAPSHOT_VALVE} \
                 ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
                 ! {SNAPSHOT_JPEG}{vp8}{low}"
            )
        }
    };
    let audio_source = match audio {
        AudioPlan::None => return video_branch,
        AudioPlan::Test => {
            "audiotestsrc is-live=true wave=sine freq=440 volume=0.1 samplesperbuffer=960"
                .to_owned()
        }
        AudioPlan::Alsa => format!("alsasrc device={} buffer-time=40000", quoted(&a.device)),
    };
    format!(
        "{video_branch}  {audio_source} ! audioconvert ! audioresample \
         ! audio/x-raw,rate=48000,channels={} \
         ! queue max-size-buffers=5 max-size-bytes=0 max-size-time=0 leaky=downstream \
         ! opusenc bitrate={} frame-size=20 \
         ! appsink name=audio sync=false max-buffers=100 drop=true",
        a.channels,
        u64::from(a.bitrate_kbps) * 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe::default()
    }

    #[test]
    fn no_camera_means_test_pattern_with_tone_and_x264() {
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &probe()).unwrap();
        assert_eq!(d.video, VideoPlan::Test);
        assert_eq!(d.encoder, EncoderPlan::X264);
        assert_eq!(d.audio, AudioPlan::Test);
        assert!(d.launch.starts_with("videotestsrc is-live=true"));
        assert!(
            !d.launch.contains("clockoverlay"),
            "no pango plugin, no overlay"
        );
        let overlaid = Probe {
            text_overlay: true,
            ..probe()
        };
        let d2 = describe(&VideoConfig::default(), &AudioConfig::default(), &overlaid).unwrap();
        assert!(d2.launch.contains("! clockoverlay ") && d2.launch.contains("! timeoverlay "));
        assert!(d.launch.contains(
            "x264enc name=encoder tune=zerolatency speed-preset=ultrafast bitrate=2000 key-int-max=60"
        ));
        assert!(d.launch.contains("profile=constrained-baseline"));
        assert!(d.launch.contains("h264parse config-interval=-1"));
        assert!(d.launch.contains("appsink name=video"));
        // Snapshots tap the raw frames in front of the encoder, behind a closed valve.
        assert!(
            d.launch
                .contains("! tee name=snapshot_tee ! queue max-size-buffers=2")
                && d.launch.contains(
                    "snapshot_tee. ! valve name=snapshot_valve drop=true \
                     ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
                     ! videoconvert ! jpegenc quality=85 \
                     ! appsink name=snapshot sync=false async=false"
                ),
            "{}",
            d.launch
        );
        assert!(d.launch.contains("opusenc bitrate=32000"));
        assert!(d.launch.contains("appsink name=audio"));
    }

    #[test]
    fn an_owners_pipeline_is_scaled_and_encoded() {
        let video = VideoConfig {
            source: VideoSource::Pipeline,
            pipeline: " shmsrc socket-path=/run/feed is-live=true ! video/x-raw,format=I420 "
                .into(),
            width: 640,
            height: 480,
            fps: 15,
            ..VideoConfig::default()
        };
        let d = describe(&video, &AudioConfig::default(), &probe()).unwrap();
        assert_eq!(d.video, VideoPlan::Pipeline);
        assert_eq!(d.encoder, EncoderPlan::X264);
        assert_eq!(d.audio, AudioPlan::None, "no ALSA capture here");
        assert!(d.fallback.is_none() && d.reencode.is_none());
        assert!(d.launch.starts_with(
            "shmsrc socket-path=/run/feed is-live=true ! video/x-raw,format=I420 ! videoconvert \
             ! videoscale ! videorate ! video/x-raw,width=640,height=480,framerate=15/1 ! tee name=snapshot_tee ! queue"
        ), "{}", d.launch);
        assert!(d.launch.contains("key-int-max=30"));
        assert_eq!(d.to_string(), "video pipeline, encoder X264, audio none");
    }

    fn device(formats: &[&str]) -> Vec<mode::DeviceFormat> {
        formats
            .iter()
            .map(|f| mode::DeviceFormat {
                fourcc: (*f).into(),
                description: String::new(),
                sizes: vec![mode::FrameSize {
                    width: 1280,
                    height: 720,
                    fps: vec![mode::FrameRate::whole(30)],
                }],
            })
            .collect()
    }

    #[test]
    fn uvc_h264_is_passed_through_and_mjpeg_is_decoded() {
        let mut p = probe();
        p.v4l2 = device(&["MJPG", "H264", "YUYV"]);
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        assert_eq!(d.video, VideoPlan::V4l2(V4l2Format::H264));
        assert_eq!(d.encoder, EncoderPlan::Passthrough);
        assert!(!d.launch.contains("x264enc"));
        assert!(
            !d.launch.contains("snapshot"),
            "no decoder: no snapshot branch"
        );
        assert!(d.launch.contains(
            "v4l2src device=\"/dev/video0\" ! video/x-h264,width=1280,height=720,framerate=30/1"
        ));
        assert_eq!(
            d.to_string(),
            "video v4l2 (H264) H264 1280x720@30, encoder Passthrough, audio none"
        );
        let v = VideoConfig {
            format: V4l2Format::Mjpeg,
            ..VideoConfig::default()
        };
        let d = describe(&v, &AudioConfig::default(), &p).unwrap();
        assert!(
            d.launch
                .contains("image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec")
        );
        assert_eq!(d.encoder, EncoderPlan::X264);
    }

    #[test]
    fn raw_capture_asks_for_the_negotiated_format_size_and_rate() {
        let mut p = probe();
        p.v4l2 = vec![mode::DeviceFormat {
            fourcc: "YUYV".into(),
            description: String::new(),
            sizes: vec![
                mode::FrameSize {
                    width: 640,
                    height: 360,
                    fps: vec![mode::FrameRate::whole(30)],
                },
                mode::FrameSize {
                    width: 1280,
                    height: 720,
                    fps: vec![mode::FrameRate { num: 25, den: 2 }],
                },
            ],
        }];
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        assert!(
            d.launch.contains(
                "v4l2src device=\"/dev/video0\" ! video/x-raw,format=YUY2,width=640,height=360,framerate=30/1"
            ),
            "{}",
            d.launch
        );
        assert_eq!(d.fps(30), 30);
        let strict = VideoConfig {
            strict_mode: true,
            ..VideoConfig::default()
        };
        assert!(matches!(
            describe(&strict, &AudioConfig::default(), &p),
            Err(PlanError::Mode(mode::ModeError::NotExact { .. }))
        ));
    }

    #[test]
    fn an_unplugged_camera_is_replaced_by_the_test_pattern_at_its_mode() {
        let mut p = probe();
        p.v4l2 = vec![mode::DeviceFormat {
            fourcc: "H264".into(),
            description: String::new(),
            sizes: vec![mode::FrameSize {
                width: 1920,
                height: 1080,
                fps: vec![mode::FrameRate::whole(25)],
            }],
        }];
        p.alsa_capture = true;
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        assert_eq!(d.encoder, EncoderPlan::Passthrough);
        let fb = d.fallback.as_deref().expect("a fallback for a V4L2 camera");
        assert_eq!(fb.video, VideoPlan::Test);
        assert_eq!(fb.encoder, EncoderPlan::X264, "the stand-in is encoded");
        assert_eq!(fb.audio, AudioPlan::Alsa, "the microphone stays");
        assert!(
            fb.launch
                .contains("video/x-raw,width=1920,height=1080,framerate=25/1"),
            "{}",
            fb.launch
        );
        assert!(fb.fallback.is_none());
        let test = describe(&VideoConfig::default(), &AudioConfig::default(), &probe()).unwrap();
        assert!(test.fallback.is_none());
    }

    #[test]
    fn passthrough_can_fall_back_to_decoding_and_encoding_the_same_mode() {
        let mut p = probe();
        p.v4l2 = device(&["H264"]);
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        assert_eq!(d.encoder, EncoderPlan::Passthrough);
        assert!(d.reencode.is_none(), "no decoder, no re-encode");
        p.h264_decoder = Some("avdec_h264".into());
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        let re = d.reencode.as_deref().expect("a re-encode plan");
        assert_eq!(re.encoder, EncoderPlan::X264);
        assert!(
            re.launch.contains(
                "v4l2src device=\"/dev/video0\" ! video/x-h264,width=1280,height=720,framerate=30/1 \
                 ! h264parse ! avdec_h264 ! tee name=snapshot_tee ! queue"
            ),
            "{}",
            re.launch
        );
        assert_eq!(
            re.to_string(),
            "video v4l2 (H264) H264 1280x720@30, encoder X264 (re-encoding the camera's H.264), audio none"
        );
        assert!(re.reencode.is_none());
        // Passed through, snapshots decode the camera's H.264 behind the valve.
        assert!(
            d.launch.contains(
                "alignment=au ! tee name=snapshot_tee ! appsink name=video sync=false max-buffers=60 drop=true  \
                 snapshot_tee. ! valve name=snapshot_valve drop=true ! queue max-size-buffers=30"
            ) && d.launch.contains("! avdec_h264 output-corrupt=false ! videoconvert ! jpegenc"),
            "{}",
            d.launch
        );
        assert_eq!(
            passthrough_patience(2000),
            std::time::Duration::from_secs(4)
        );
    }

    #[test]
    fn pi_hardware_encoder_is_chosen_when_present() {
        let mut p = probe();
        p.libcamerasrc = true;
        p.v4l2h264enc = true;
        p.alsa_capture = true;
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        assert_eq!(d.video, VideoPlan::Libcamera);
        assert_eq!(d.encoder, EncoderPlan::V4l2h264enc);
        assert_eq!(d.audio, AudioPlan::Alsa);
        assert!(
            d.launch
                .contains("repeat_sequence_header=1,video_bitrate=2000000,h264_i_frame_period=60")
        );
        let v = VideoConfig {
            encoder: EncoderChoice::X264,
            ..VideoConfig::default()
        };
        assert_eq!(
            describe(&v, &AudioConfig::default(), &p).unwrap().encoder,
            EncoderPlan::X264
        );
    }

    #[test]
    fn explicit_choices_that_are_missing_are_errors() {
        let v = VideoConfig {
            source: VideoSource::V4l2,
            ..VideoConfig::default()
        };
        assert_eq!(
            describe(&v, &AudioConfig::default(), &probe()),
            Err(PlanError::SourceMissing("v4l2"))
        );
        let missing = Probe {
            v4l2_problem: Some("/dev/video0 does not exist".into()),
            ..probe()
        };
        assert_eq!(
            describe(&v, &AudioConfig::default(), &missing)
                .unwrap_err()
                .to_string(),
            "video source v4l2: /dev/video0 does not exist"
        );
        let v = VideoConfig {
            encoder: EncoderChoice::V4l2h264enc,
            ..VideoConfig::default()
        };
        assert_eq!(
            describe(&v, &AudioConfig::default(), &probe()),
            Err(PlanError::EncoderMissing)
        );
    }

    #[test]
    fn the_vp8_rung_is_a_valved_branch_where_there_are_raw_frames() {
        let p = Probe {
            vp8enc: true,
            ..probe()
        };
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &p).unwrap();
        assert_eq!(
            d.vp8,
            Some(Rung {
                width: 640,
                height: 360,
                bitrate_kbps: 500
            })
        );
        assert!(
            d.launch.contains(
                "snapshot_tee. ! valve name=vp8_valve drop=true ! queue max-size-buffers=2 max-size-bytes=0 \
                 max-size-time=0 leaky=downstream ! videoscale ! videoconvert \
                 ! video/x-raw,width=640,height=360,format=I420 \
                 ! vp8enc name=vp8_encoder deadline=1 cpu-used=8 end-usage=cbr target-bitrate=500000 keyframe-max-dist=60"
            ) && d.launch.contains("! appsink name=vp8 sync=false async=false"),
            "{}",
            d.launch
        );
        // Off, or no vp8enc: no rung.
        let off = VideoConfig {
            vp8_bitrate_kbps: 0,
            ..VideoConfig::default()
        };
        assert_eq!(
            describe(&off, &AudioConfig::default(), &p).unwrap().vp8,
            None
        );
        let plain = describe(&VideoConfig::default(), &AudioConfig::default(), &probe()).unwrap();
        assert!(plain.vp8.is_none() && !plain.launch.contains("vp8"));
        // The aspect is kept, and the rung is never wider than the picture.
        let square = VideoConfig {
            width: 480,
            height: 480,
            ..VideoConfig::default()
        };
        let rung = describe(&square, &AudioConfig::default(), &p)
            .unwrap()
            .vp8
            .unwrap();
        assert_eq!((rung.width, rung.height), (480, 480));
        let cinema = VideoConfig {
            width: 1920,
            height: 818,
            ..VideoConfig::default()
        };
        let rung = describe(&cinema, &AudioConfig::default(), &p)
            .unwrap()
            .vp8
            .unwrap();
        assert_eq!((rung.width, rung.height), (640, 272));
        // A passed-through camera's H.264 needs a decoder for the rung.
        let mut cam = p.clone();
        cam.v4l2 = device(&["H264"]);
        assert_eq!(
            describe(&VideoConfig::default(), &AudioConfig::default(), &cam)
                .unwrap()
                .vp8,
            None
        );
        cam.h264_decoder = Some("avdec_h264".into());
        let d = describe(&VideoConfig::default(), &AudioConfig::default(), &cam).unwrap();
        assert!(d.vp8.is_some());
        assert!(
            d.launch.contains(
                "snapshot_tee. ! valve name=vp8_valve drop=true ! queue max-size-buffers=30 max-size-bytes=0 \
                 max-size-time=0 ! avdec_h264 output-corrupt=false ! videoscale"
            ),
            "{}",
            d.launch
        );
    }

    #[test]
    fn audio_none_leaves_a_video_only_pipeline() {
        let a = AudioConfig {
            source: AudioSource::None,
            ..AudioConfig::default()
        };
        let d = describe(&VideoConfig::default(), &a, &probe()).unwrap();
        assert!(!d.launch.contains("appsink name=audio"));
    }

    #[test]
    fn device_names_are_quoted() {
        assert_eq!(quoted("hw:1,0"), "\"hw:1,0\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }
}
