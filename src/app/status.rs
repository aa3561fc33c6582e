//! The retained status payload (signaling contract, "Status payload") built from the
//! configuration and what the encoder reports.

use crate::media::VideoFormat;
use crate::signaling::protocol::{AudioInfo, PROTOCOL_VERSION, Status, VideoInfo};

/// The extensions every edgecam camera serves (`docs/signaling.md`, "Extensions").
pub(super) const EXTENSIONS: &[&str] = &["control-channel-v1"];

/// The extension a camera with a speaker (`[audio] playback_device`) adds: viewers may
/// offer their audio `sendrecv` and talk (`docs/signaling.md`, "Two-way audio").
pub(super) const TALK_EXTENSION: &str = "talk-v1";

/// The extension a camera with a VP8 rung adds: an offer without a usable H.264 payload
/// but with VP8 is answered with VP8 instead of `bad-offer` (`docs/signaling.md`,
/// "VP8 for viewers without H.264").
pub(super) const VP8_EXTENSION: &str = "vp8-v1";

/// What the status says that does not change while the camera runs.
pub(super) struct StatusBuilder {
    pub camera: String,
    pub name: String,
    pub max_viewers: u32,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub audio: Option<AudioInfo>,
    pub turn: bool,
    /// Invite mode: the status advertises `auth: ["signed-v1"]`.
    pub signed: bool,
    /// Talk-back is on: the status advertises [`TALK_EXTENSION`].
    pub talk: bool,
    /// The pipeline has a VP8 rung: the status advertises [`VP8_EXTENSION`].
    pub vp8: bool,
}

impl StatusBuilder {
    pub(super) fn build(&self, viewers: u32, format: Option<&VideoFormat>) -> Status {
        let (width, height) = format
            .filter(|f| f.width > 0)
            .map_or((self.width, self.height), |f| (f.width, f.height));
        Status {
            protocol: PROTOCOL_VERSION,
            state: "online".into(),
            camera: self.camera.clone(),
            name: Some(self.name.clone()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            video: Some(VideoInfo {
                codec: "H264".into(),
                width,
                height,
                fps: self.fps,
            }),
            audio: Some(self.audio.clone()),
            viewers: Some(viewers),
            max_viewers: Some(self.max_viewers),
            turn: self.turn.then_some(true),
            auth: self.signed.then(|| vec!["signed-v1".to_owned()]),
            extensions: Some(
                EXTENSIONS
                    .iter()
                    .copied()
                    .chain(self.talk.then_some(TALK_EXTENSION))
                    .chain(self.vp8.then_some(VP8_EXTENSION))
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }
}
