//! A receive-only webrtc-rs viewer that measures what it gets: the `selftest` command's
//! loopback viewer, the benchmark's load viewer and the test suite's viewer.
//!
//! It offers recvonly H.264 + Opus (RFC 8829 §5.2), leaves signaling to its owner (SDP
//! offer/answer and trickled ICE candidates go in and out as strings), depacketizes
//! H.264 (RFC 6184 §5.8, FU-A and STAP-A) into access units, ends an access unit on the
//! RTP marker bit (RFC 6184 §5.1) and counts complete frames, IDRs and Opus packets.

use crate::media::h264;
use crate::signaling::protocol::CandidateInit;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::rtp::packetizer::Depacketizer as _;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// How many RTP timestamps of the first frames a probe keeps.
const TIMESTAMPS_KEPT: usize = 64;

/// Errors of the probe viewer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// webrtc-rs failed, with what was being done.
    #[error("probe viewer: {what}: {source}")]
    Webrtc {
        /// What the probe was doing.
        what: &'static str,
        /// The webrtc-rs error.
        #[source]
        source: webrtc::error::Error,
    },
    /// The `control` data channel is missing, closed, silent or said something
    /// unexpected.
    #[error("probe viewer: control channel: {0}")]
    Control(String),
}

fn err(what: &'static str) -> impl FnOnce(webrtc::error::Error) -> ProbeError {
    move |source| ProbeError::Webrtc { what, source }
}

/// Called with each complete H.264 access unit (Annex B) as it is reassembled.
pub type VideoSink = Box<dyn Fn(Vec<u8>) + Send + Sync>;
/// Called with each Opus packet's payload.
pub type AudioSink = Box<dyn Fn(bytes::Bytes) + Send + Sync>;

/// How to build a probe.
#[derive(Default)]
pub struct ProbeOptions {
    /// Local UDP sockets (`ip:port`; port 0 = ephemeral) to gather host candidates on.
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers (`stun:`/`turn:` URLs, username, credential).
    pub ice_servers: Vec<(Vec<String>, String, String)>,
    /// Receives each complete access unit (e.g. into a decoder).
    pub on_video: Option<VideoSink>,
    /// Receives each Opus packet.
    pub on_audio: Option<AudioSink>,
    /// Opens a `control` data channel with the offer ([`ProbeViewer::control`]).
    pub control: bool,
    /// Offers its audio `sendrecv`, to talk through the camera ([`ProbeViewer::talk`]).
    pub talk: bool,
}

/// The probe's microphone: an Opus track and its RTP sequence and timestamp.
struct TalkTrack {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// Next sequence number and RTP timestamp (48 kHz).
    next: tokio::sync::Mutex<(u16, u32)>,
}

/// A reply on the `control` data channel, with the binary messages it announced.
#[derive(Debug, Clone)]
pub struct ControlReply {
    /// The JSON reply.
    pub reply: serde_json::Value,
    /// The payload of a `snapshot` reply (its binary messages joined), else empty.
    pub payload: Vec<u8>,
}

/// What the probe's control channel delivers, in order.
enum ControlEvent {
    Open,
    Text(String),
    Binary(bytes::BytesMut),
}

/// The probe's end of the `control` data channel.
struct ControlChannel {
    dc: Arc<dyn webrtc::data_channel::DataChannel>,
    events: tokio::sync::Mutex<(mpsc::UnboundedReceiver<ControlEvent>, bool)>,
}

/// What the probe saw so far (JSON: camelCase, durations as `…Ms` in ms).
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// Complete H.264 access units (frames) received.
    pub video_frames: u64,
    /// Access units that were IDRs with SPS and PPS (decoder entry points).
    pub keyframes: u64,
    /// Whether the first access unit was an IDR with SPS and PPS.
    pub first_frame_idr_with_sps_pps: Option<bool>,
    /// Whether the first video RTP packet received belongs to an IDR access unit (it
    /// carries SPS, PPS or an IDR slice: RFC 6184 §5.4 NAL types 7, 8, 5, read through
    /// STAP-A and FU-A). Unlike the first *complete* frame, a lost packet of that IDR
    /// does not change it: it tells whether the camera started this viewer at a
    /// keyframe even on a lossy path.
    pub first_packet_keyframe: Option<bool>,
    /// Time from [`ProbeViewer::create_offer`] to the first complete access unit.
    #[serde(serialize_with = "millis", rename = "firstFrameAfterOfferMs")]
    pub first_frame_after_offer: Option<Duration>,
    /// Time from [`ProbeViewer::create_offer`] to the peer connection state `connected`.
    #[serde(serialize_with = "millis", rename = "connectedAfterOfferMs")]
    pub connected_after_offer: Option<Duration>,
    /// Opus packets received.
    pub opus_packets: u64,
    /// Peer connection state (W3C WebRTC §4.3.3 names: `connected`, `failed`, …).
    pub state: Option<String>,
    /// Video RTP packets missing from the sequence-number series (RFC 3550 §A.3 style:
    /// gaps between consecutive sequence numbers; reordering counts as loss here).
    pub video_packets_lost: u64,
    /// Access units dropped because one of their packets was lost or did not
    /// depacketize.
    pub incomplete_frames: u64,
    /// RTP timestamp (90 kHz) of the last complete access unit: with the first one it
    /// tells how many frames were sent, so frame loss is `expected − received`.
    pub last_video_timestamp: Option<u32>,
    /// RTP timestamps (90 kHz) of the first 64 frames.
    #[serde(skip)]
    pub video_timestamps: Vec<u32>,
    /// When the last complete access unit arrived.
    #[serde(skip)]
    pub last_frame_at: Option<Instant>,
    /// When the first complete access unit arrived.
    #[serde(skip)]
    pub first_frame_at: Option<Instant>,
}

impl ProbeReport {
    /// Frames per second between the first and the last frame received (0 with < 2).
    pub fn fps(&self) -> f64 {
        match (self.first_frame_at, self.last_frame_at) {
            (Some(a), Some(b)) if self.video_frames > 1 && b > a => {
                (self.video_frames - 1) as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[allow(clippy::ref_option)] // serde's `serialize_with` hands over `&Option<_>`.
fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0).round()),
        None => s.serialize_none(),
    }
}

struct Shared {
    report: Mutex<ProbeReport>,
    offered_at: Mutex<Option<Instant>>,
    video_track: Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    on_video: Option<VideoSink>,
    on_audio: Option<AudioSink>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn since_offer(&self) -> Option<Duration> {
        self.offered_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    fn frame(&self, au: Vec<u8>, rtp_timestamp: u32) {
        let idr = h264::is_self_contained_idr(&au);
        let now = Instant::now();
        let mut r = self.lock();
        r.keyframes += u64::from(idr);
        if r.first_frame_idr_with_sps_pps.is_none() {
            r.first_frame_idr_with_sps_pps = Some(idr);
            r.first_frame_after_offer = self.since_offer();
            r.first_frame_at = Some(now);
        }
        r.video_frames += 1;
        r.last_frame_at = Some(now);
        r.last_video_timestamp = Some(rtp_timestamp);
        if r.video_timestamps.len() < TIMESTAMPS_KEPT {
            r.video_timestamps.push(rtp_timestamp);
        }
        drop(r);
        if let Some(sink) = &self.on_video {
            sink(au);
        }
    }
}

struct Handler {
    shared: Arc<Shared>,
    local: mpsc::UnboundedSender<Option<CandidateInit>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.local.send(Some(CandidateInit {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            }));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let since = self.shared.since_offer();
        let mut r = self.shared.lock();
        if state == RTCPeerConnectionState::Connected && r.connected_after_offer.is_none() {
            r.connected_after_offer = since;
        }
        r.state = Some(state.to_string());
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = track.kind().await;
        if kind == RtpCodecKind::Video
            && let Some(ssrc) = track.ssrcs().await.first().copied()
        {
            *self
                .shared
                .video_track
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((track.clone(), ssrc));
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut depacketizer = rtc::rtp::codec::h264::H264Packet::default();
            let mut au: Vec<u8> = Vec::new();
            let mut next_seq: Option<u16> = None;
            // Set when a packet of the current access unit was lost: the rest of it is
            // skipped up to its marker, and the frame counts as incomplete.
            let mut spoiled = false;
            let mut au_timestamp: Option<u32> = None;
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = evt else {
                    continue;
                };
                if kind == RtpCodecKind::Audio {
                    shared.lock().opus_packets += 1;
                    if let Some(sink) = &shared.on_audio {
                        sink(packet.payload.clone());
                    }
                    continue;
                }
                {
                    let mut r = shared.lock();
                    if r.first_packet_keyframe.is_none() {
                        r.first_packet_keyframe = Some(rtp_h264_keyframe_packet(&packet.payload));
                    }
                }
                let seq = packet.header.sequence_number;
                if next_seq.is_some_and(|n| seq.wrapping_sub(n) >= 0x8000) {
                    // Late (reordered or duplicated): behind what was already handled.
                    continue;
                }
                // A new RTP timestamp starts a new access unit: one still open lost its
                // marker packet.
                if au_timestamp.is_some_and(|ts| ts != packet.header.timestamp) {
                    if spoiled || !au.is_empty() {
                        shared.lock().incomplete_frames += 1;
                    }
                    au.clear();
                    spoiled = false;
                }
                au_timestamp = Some(packet.header.timestamp);
                // Packets lost since the last one spoil the access unit in progress
                // (conservatively: they may have been the end of the previous one).
                if let Some(expected) = next_seq {
                    let gap = seq.wrapping_sub(expected);
                    if gap > 0 {
                        shared.lock().video_packets_lost += u64::from(gap);
                        spoiled = true;
                    }
                }
                next_seq = Some(seq.wrapping_add(1));
                // A packet that does not depacketize (lost FU-A start, say) spoils its
                // access unit too.
                if !spoiled {
                    match depacketizer.depacketize(&packet.payload) {
                        Ok(nals) => au.extend_from_slice(&nals),
                        Err(_) => spoiled = true,
                    }
                }
                if packet.header.marker {
                    au_timestamp = None;
                    if spoiled {
                        shared.lock().incomplete_frames += 1;
                        au.clear();
                        spoiled = false;
                    } else if !au.is_empty() {
                        shared.frame(std::mem::take(&mut au), packet.header.timestamp);
                    }
                }
            }
        });
    }
}

/// Whether an H.264 RTP payload (RFC 6184 §5.2) carries part of a keyframe: SPS (7),
/// PPS (8) or an IDR slice (5), as a single NAL unit, the first NAL of a STAP-A (24) or
/// the fragmented NAL of an FU-A (28).
fn rtp_h264_keyframe_packet(payload: &[u8]) -> bool {
    let nal_type = match payload.first().map(|b| b & 0x1f) {
        Some(24) => payload.get(3).map(|b| b & 0x1f),
        Some(28) => payload.get(1).map(|b| b & 0x1f),
        other => other,
    };
    matches!(nal_type, Some(5 | 7 | 8))
}

/// Remote candidates that arrived before the answer (trickle ICE, RFC 8838 §4.2: a
/// candidate can only be applied once the remote description is set).
#[derive(Default)]
struct EarlyCandidates {
    answered: bool,
    held: Vec<CandidateInit>,
}

/// A receive-only viewer on one webrtc-rs peer connection.
pub struct ProbeViewer {
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    early: Mutex<EarlyCandidates>,
    control: Option<ControlChannel>,
    talk: Option<TalkTrack>,
}

impl ProbeViewer {
    /// Builds the peer connection with recvonly video and audio transceivers. Local ICE
    /// candidates come out of the returned receiver as they are gathered (trickle ICE).
    /// mDNS is off: probes run where multicast may not exist and edgecam never sends
    /// `.local` candidates.
    ///
    /// # Errors
    /// When webrtc-rs cannot build the connection or bind `udp_addrs`.
    pub async fn new(
        options: ProbeOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Option<CandidateInit>>), ProbeError> {
        let shared = Arc::new(Shared {
            report: Mutex::default(),
            offered_at: Mutex::default(),
            video_track: Mutex::default(),
            on_video: options.on_video,
            on_audio: options.on_audio,
        });
        let (local, local_rx) = mpsc::unbounded_channel();
        let mut engine = MediaEngine::default();
        engine
            .register_default_codecs()
            .map_err(err("registering codecs"))?;
        let registry = register_default_interceptors(Registry::new(), &mut engine)
            .map_err(err("registering interceptors"))?;
        let servers = options
            .ice_servers
            .into_iter()
            .map(|(urls, username, credential)| RTCIceServer {
                urls,
                username,
                credential,
            })
            .collect();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(servers)
                    .build(),
            )
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
                local,
            }))
            .with_udp_addrs(options.udp_addrs)
            .build()
            .await
            .map_err(err("building the peer connection"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let talk = if options.talk {
            let ssrc = rand::random::<u32>();
            let track = super::session::local_track(
                RtpCodecKind::Audio,
                super::session::codec_opus(),
                ssrc,
                None,
            );
            let transceiver = pc
                .add_transceiver_from_track(
                    track.clone() as Arc<dyn TrackLocal>,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendrecv,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(err("adding the talk transceiver"))?;
            let sender = transceiver
                .sender()
                .await
                .map_err(err("the talk transceiver's sender"))?
                .ok_or_else(|| ProbeError::Control("talk transceiver has no sender".into()))?;
            Some(TalkTrack {
                track,
                sender,
                ssrc,
                next: tokio::sync::Mutex::new((rand::random(), rand::random())),
            })
        } else {
            None
        };
        let kinds: &[RtpCodecKind] = if talk.is_some() {
            &[RtpCodecKind::Video]
        } else {
            &[RtpCodecKind::Video, RtpCodecKind::Audio]
        };
        for &kind in kinds {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(err("adding a transceiver"))?;
        }
        let control = if options.control {
            let dc = pc
                .create_data_channel(super::control::LABEL, None)
                .await
                .map_err(err("creating the control data channel"))?;
            let (tx, rx) = mpsc::unbounded_channel();
            let reader = dc.clone();
            tokio::spawn(async move {
                use webrtc::data_channel::DataChannelEvent as E;
                while let Some(event) = reader.poll().await {
                    let forwarded = match event {
                        E::OnOpen => ControlEvent::Open,
                        E::OnMessage(m) if m.is_string => {
                            ControlEvent::Text(String::from_utf8_lossy(&m.data).into_owned())
                        }
                        E::OnMessage(m) => ControlEvent::Binary(m.data),
                        E::OnClose => break,
                        _ => continue,
                    };
                    if tx.send(forwarded).is_err() {
                        break;
                    }
                }
            });
            Some(ControlChannel {
                dc,
                events: tokio::sync::Mutex::new((rx, false)),
            })
        } else {
            None
        };
        Ok((
            Self {
                pc,
                shared,
                early: Mutex::default(),
                control,
                talk,
            },
            local_rx,
        ))
    }

    /// Sends `request` (a JSON text) on the `control` data channel, once it is open,
    /// and returns the next reply with the binary messages it announced (`chunks`).
    ///
    /// # Errors
    /// Without a control channel ([`ProbeOptions::control`]), when it closes, or when
    /// nothing comes within `limit`.
    pub async fn control(
        &self,
        request: &str,
        limit: Duration,
    ) -> Result<ControlReply, ProbeError> {
        let channel = self
            .control
            .as_ref()
            .ok_or_else(|| ProbeError::Control("none was opened".into()))?;
        let closed = || ProbeError::Control("closed".into());
        let work = async {
            let mut guard = channel.events.lock().await;
            let (events, open) = &mut *guard;
            while !*open {
                match events.recv().await.ok_or_else(closed)? {
                    ControlEvent::Open => *open = true,
                    _ => continue,
                }
            }
            channel
                .dc
                .send_text(request)
                .await
                .map_err(err("sending a control request"))?;
            let reply = loop {
                if let ControlEvent::Text(t) = events.recv().await.ok_or_else(closed)? {
                    break serde_json::from_str::<serde_json::Value>(&t)
                        .map_err(|e| ProbeError::Control(format!("reply is not JSON: {e}")))?;
                }
            };
            let chunks = reply["chunks"].as_u64().unwrap_or(0);
            let mut payload = Vec::new();
            for _ in 0..chunks {
                match events.recv().await.ok_or_else(closed)? {
                    ControlEvent::Binary(b) => payload.extend_from_slice(&b),
                    _ => {
                        return Err(ProbeError::Control(
                            "a text message where a snapshot chunk was due".into(),
                        ));
                    }
                }
            }
            Ok(ControlReply { reply, payload })
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| ProbeError::Control(format!("no reply within {} ms", limit.as_millis())))?
    }

    /// Sends one Opus packet (RFC 7587: one packet per RTP payload) lasting `samples`
    /// at 48 kHz on the talk track, with the negotiated payload type.
    ///
    /// # Errors
    /// Without a talk track ([`ProbeOptions::talk`]), before the answer negotiated
    /// one, or when the connection is gone.
    pub async fn talk(&self, opus: bytes::Bytes, samples: u32) -> Result<(), ProbeError> {
        let talk = self
            .talk
            .as_ref()
            .ok_or_else(|| ProbeError::Control("no talk track".into()))?;
        let params = talk
            .sender
            .get_parameters()
            .await
            .map_err(err("the talk track's parameters"))?;
        let payload_type = params
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| ProbeError::Control("no codec negotiated for talk".into()))?;
        let mut next = talk.next.lock().await;
        let (sequence_number, timestamp) = *next;
        *next = (
            sequence_number.wrapping_add(1),
            timestamp.wrapping_add(samples),
        );
        drop(next);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type,
                sequence_number,
                timestamp,
                ssrc: talk.ssrc,
                ..Default::default()
            },
            payload: opus,
        };
        talk.track
            .write_rtp(packet)
            .await
            .map_err(err("sending talk audio"))
    }

    /// Creates the SDP offer, applies it locally (starting ICE gathering) and returns
    /// it. Time to first frame is measured from here.
    ///
    /// # Errors
    /// When webrtc-rs cannot create or apply the offer.
    pub async fn create_offer(&self) -> Result<String, ProbeError> {
        let sdp = self.offer(None).await?;
        *self
            .shared
            .offered_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(sdp)
    }

    /// Creates an ICE restart offer (new ICE credentials, RFC 8445 §9; W3C
    /// `RTCOfferOptions.iceRestart`) on the live connection and applies it locally.
    /// Remote candidates are held again until its answer.
    ///
    /// # Errors
    /// When webrtc-rs cannot create or apply the offer.
    pub async fn restart_ice(&self) -> Result<String, ProbeError> {
        self.early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answered = false;
        self.offer(Some(rtc::peer_connection::configuration::RTCOfferOptions {
            ice_restart: true,
        }))
        .await
    }

    /// Creates an offer with `options`, applies it locally and returns its SDP.
    async fn offer(
        &self,
        options: Option<rtc::peer_connection::configuration::RTCOfferOptions>,
    ) -> Result<String, ProbeError> {
        let offer = self
            .pc
            .create_offer(options)
            .await
            .map_err(err("creating the offer"))?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(err("applying the offer"))?;
        Ok(self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default())
    }

    /// Applies the camera's SDP answer, then the remote candidates held until now (one
    /// that does not parse is logged and skipped: ICE goes on with the others).
    ///
    /// # Errors
    /// When the answer is not valid SDP or does not match the offer.
    pub async fn apply_answer(&self, sdp: String) -> Result<(), ProbeError> {
        let answer = RTCSessionDescription::answer(sdp).map_err(err("parsing the answer"))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(err("applying the answer"))?;
        let held = {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            early.answered = true;
            std::mem::take(&mut early.held)
        };
        for c in held {
            if let Err(e) = self.apply_candidate(c).await {
                log::warn!("{e}");
            }
        }
        Ok(())
    }

    /// Adds a remote ICE candidate (`None` = end of candidates, which needs no action).
    /// Candidates that arrive before the answer are held and applied with it.
    ///
    /// # Errors
    /// When the candidate line does not parse.
    pub async fn add_candidate(&self, candidate: Option<CandidateInit>) -> Result<(), ProbeError> {
        let Some(c) = candidate else { return Ok(()) };
        {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            if !early.answered {
                early.held.push(c);
                return Ok(());
            }
        }
        self.apply_candidate(c).await
    }

    async fn apply_candidate(&self, c: CandidateInit) -> Result<(), ProbeError> {
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
                ..Default::default()
            })
            .await
            .map_err(err("adding a remote candidate"))
    }

    /// A copy of what the probe saw so far.
    pub fn report(&self) -> ProbeReport {
        self.shared.lock().clone()
    }

    /// Sends an RTCP Picture Loss Indication (RFC 4585 §6.3.1) for the video track.
    ///
    /// # Errors
    /// Before the video track arrived, or when the RTCP write fails.
    pub async fn send_pli(&self) -> Result<(), ProbeError> {
        let track = self
            .shared
            .video_track
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((track, media_ssrc)) = track else {
            return Err(ProbeError::Webrtc {
                what: "sending a PLI",
                source: webrtc::error::Error::Other("no video track yet".into()),
            });
        };
        track
            .write_rtcp(vec![Box::new(
                rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                },
            )])
            .await
            .map_err(err("sending a PLI"))
    }

    /// Closes the peer connection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::rtp_h264_keyframe_packet as key;

    #[test]
    fn keyframe_packets_are_recognised_through_stap_a_and_fu_a() {
        // STAP-A whose first NAL (after the 2-byte size) is an SPS.
        assert!(key(&[0x78, 0x00, 0x0a, 0x67, 0x42]));
        // FU-A start and middle of an IDR slice.
        assert!(key(&[0x7c, 0x85, 0x88]));
        assert!(key(&[0x7c, 0x05, 0x11]));
        // A single IDR NAL; a PPS.
        assert!(key(&[0x65, 0x88]));
        assert!(key(&[0x68, 0xce]));
        // P slices, single and fragmented; junk.
        assert!(!key(&[0x41, 0x9a]));
        assert!(!key(&[0x5c, 0x81, 0x9a]));
        assert!(!key(&[]));
        assert!(!key(&[0x78]));
    }
}
