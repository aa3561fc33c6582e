//! The GStreamer adapter for the other direction, talk-back: a viewer's Opus RTP
//! packets (RFC 7587) are reordered and de-jittered (`rtpjitterbuffer`), decoded
//! (`opusdec`, with packet-loss concealment) and played on an ALSA device (`alsasink`).
//! One [`Playback`] lives for one talker's turn; a new talker gets a new one, so each
//! starts with its own SSRC, sequence and timestamp space and an empty jitter buffer.
//!
//! The sink plays what the jitter buffer releases as it comes (`sync=false`): synced
//! to the pipeline clock, ALSA's `pulse` PCM dropped nearly every buffer as late (240
//! of 5000 ms played, measured with `udpsrc` in place of the viewer); the jitter
//! buffer already paces the packets, and the viewer's clock is not ours anyway.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Jitter buffer depth, ms: enough for Wi-Fi jitter, short enough for a conversation.
const JITTER_MS: u32 = 80;

/// Bytes of RTP the source element may hold before it drops the oldest (about 0.5 s
/// of 64 kbit/s Opus): a stalled sound card costs bounded memory and latency.
const QUEUE_BYTES: u64 = 4 * 1024;

/// Why playback could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    /// The pipeline description was rejected (a plugin is missing).
    #[error("talk-back pipeline rejected: {0}")]
    Parse(String),
    /// The pipeline did not start (the ALSA device is missing or busy).
    #[error("talk-back pipeline did not start on {device:?}: {reason}")]
    Start {
        /// The ALSA PCM.
        device: String,
        /// GStreamer's words.
        reason: String,
    },
    /// The running pipeline reported an error (device gone, format refused).
    #[error("talk-back playback failed: {0}")]
    Failed(String),
}

/// The pipeline for payload type `pt` on ALSA PCM `device` (quoted for the parser).
fn description(device: &str, pt: u8) -> String {
    let device = device.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "appsrc name=talk is-live=true format=time do-timestamp=true leaky-type=downstream \
         max-bytes={QUEUE_BYTES} \
         caps=\"application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int){pt}\" \
         ! rtpjitterbuffer name=jitter latency={JITTER_MS} drop-on-latency=true \
         ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
         ! alsasink sync=false device=\"{device}\""
    )
}

/// What the jitter buffer did with one talker's packets (`rtpjitterbuffer`'s `stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets passed on to the decoder.
    pub pushed: u64,
    /// Packets given up on: not there when their time to play came, or dropped
    /// because more than the buffer's depth was queued (a burst after a stall).
    pub lost: u64,
    /// Packets that arrived after they had been given up on, and were dropped.
    pub late: u64,
}

impl std::fmt::Display for JitterStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "jitter buffer: {} pushed, {} lost, {} late",
            self.pushed, self.lost, self.late
        )
    }
}

/// One talker's playback: push RTP packets; dropping it stops the pipeline and
/// releases the device.
pub struct Playback {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    jitter: gst::Element,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback").finish_non_exhaustive()
    }
}

impl Playback {
    /// Starts playback on ALSA PCM `device` for Opus RTP with payload type `pt`.
    ///
    /// # Errors
    /// [`PlaybackError::Parse`] when a plugin is missing, [`PlaybackError::Start`] when
    /// the pipeline does not start.
    pub fn start(device: &str, pt: u8) -> Result<Self, PlaybackError> {
        let pipeline = gst::parse::launch(&description(device, pt))
            .map_err(|e| PlaybackError::Parse(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| PlaybackError::Parse("not a pipeline".into()))?;
        let src = pipeline
            .by_name("talk")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| PlaybackError::Parse("no appsrc".into()))?;
        let jitter = pipeline
            .by_name("jitter")
            .ok_or_else(|| PlaybackError::Parse("no rtpjitterbuffer".into()))?;
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let reason = bus_error(&pipeline).unwrap_or_else(|| e.to_string());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(PlaybackError::Start {
                device: device.to_owned(),
                reason,
            });
        }
        Ok(Self {
            pipeline,
            src,
            jitter,
        })
    }

    /// The jitter buffer's counters so far, for the line logged when a turn ends.
    pub fn jitter_stats(&self) -> JitterStats {
        let stats = self.jitter.property::<gst::Structure>("stats");
        let get = |name: &str| stats.get::<u64>(name).unwrap_or(0);
        JitterStats {
            pushed: get("num-pushed"),
            lost: get("num-lost"),
            late: get("num-late"),
        }
    }

    /// Queues one RTP packet (header and payload, as received).
    ///
    /// # Errors
    /// [`PlaybackError::Failed`] once the pipeline has reported an error; the caller
    /// drops this playback.
    pub fn push(&self, rtp: &[u8]) -> Result<(), PlaybackError> {
        if let Some(reason) = bus_error(&self.pipeline) {
            return Err(PlaybackError::Failed(reason));
        }
        self.src
            .push_buffer(gst::Buffer::from_slice(rtp.to_vec()))
            .map(|_| ())
            .map_err(|e| PlaybackError::Failed(format!("{e:?}")))
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let msg = pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(format!(
            "{}{}",
            err.error(),
            err.debug().map(|d| format!(" ({d})")).unwrap_or_default()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_cannot_break_out_of_their_quotes() {
        let d = description("file:'/tmp/a b.raw',raw\" ! fakesink", 111);
        assert!(
            d.ends_with(r#"alsasink sync=false device="file:'/tmp/a b.raw',raw\" ! fakesink""#),
            "{d}"
        );
        assert!(d.contains("payload=(int)111"));
    }
}
