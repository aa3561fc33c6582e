//! Building a session's peer connection: codecs and interceptors, ICE servers with
//! freshly minted TURN credentials, the port range with retry, the mDNS fallback, the
//! send tracks, and applying an offer to get the answer.

use super::SessionCtx;
use crate::peer::bwprobe::ProbeLink;
use crate::peer::estimate::{self, EstimateTap, LadderEstimator};
use crate::peer::feedback::{self, KeyframeFeedback};
use crate::peer::retransmit::{ResendCounters, Retransmitter};
use crate::peer::rtx_bind::BindRtx;
use crate::peer::sdp::VideoCodec;
use crate::signaling::protocol::ErrorCode;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use rtc::interceptor::{
    CongestionControlBuilder, GCC_MIN_BITRATE, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters};
use rtc::rtp_transceiver::{
    RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceConnectionState, RTCIceGatheringState,
    RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, configure_rtcp_reports,
};
use webrtc::rtp_transceiver::RtpSender;

/// Opus, H.264 and VP8 payload types we register; the answer uses the offer's numbers.
const H264_PT: u8 = 102;
const VP8_PT: u8 = 96;
const OPUS_PT: u8 = 111;
/// RTX (RFC 4588) payload types for H.264 and VP8.
const H264_RTX_PT: u8 = 103;
const VP8_RTX_PT: u8 = 97;

/// Bytes a data channel may have queued and unacknowledged (a snapshot is ~30–200 KB).
const DATA_CHANNEL_SEND_LIMIT: usize = 512 * 1024;

/// Set once mDNS sockets turned out to be unavailable on this host.
static MDNS_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// What the peer connection's event handler passes to the session loop.
pub(super) enum Internal {
    Candidate(RTCIceCandidateInit),
    GatheringComplete,
    Ice(RTCIceConnectionState),
    State(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
    /// A track the viewer sends (its microphone, for talk-back).
    Track(Arc<dyn TrackRemote>),
}

pub(super) struct Handler {
    tx: mpsc::UnboundedSender<Internal>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.tx.send(Internal::Candidate(init));
            }
            Err(e) => log::warn!("cannot serialise local candidate: {e}"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(Internal::GatheringComplete);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.tx.send(Internal::Ice(state));
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Internal::State(state));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.tx.send(Internal::DataChannel(data_channel));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(Internal::Track(track));
    }
}

/// Why a session could not be set up; becomes `OfferRejected`.
pub(super) struct Reject(pub ErrorCode, pub String);

/// The video codec of a session: the H.264 rung with the encoder's profile, or VP8.
fn codec_video(codec: VideoCodec, profile_level_id: &str) -> RTCRtpCodec {
    let (mime_type, sdp_fmtp_line) = match codec {
        VideoCodec::H264 => (
            "video/H264",
            format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
            ),
        ),
        VideoCodec::Vp8 => ("video/VP8", String::new()),
    };
    RTCRtpCodec {
        mime_type: mime_type.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line,
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
        ],
    }
}

pub(crate) fn codec_opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A local track of `kind` sending `codec` on `ssrc`, with an RTX stream on `rtx_ssrc`
/// where the viewer negotiates RTX (RFC 4588).
pub(crate) fn local_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
) -> Arc<TrackLocalStaticRTP> {
    let name = match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "edgecam".to_owned(),
        name.to_owned(),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

/// What the camera receives from a viewer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Receive {
    /// The viewer may talk: its audio m-line stays `sendrecv` (or `recvonly`).
    pub talk: bool,
    /// The receive-only audio transceiver added for talk-back on a camera without a
    /// microphone.
    pub recvonly_audio: Option<RTCRtpTransceiverId>,
}

pub(super) struct Built {
    pub pc: Arc<dyn PeerConnection>,
    pub receive: Receive,
    pub internal: mpsc::UnboundedReceiver<Internal>,
    pub keyframe_requests: mpsc::Receiver<()>,
    /// GCC's target for this viewer, bits per second.
    pub estimate: watch::Receiver<f64>,
    /// Bandwidth probes of this viewer (`peer::bwprobe`).
    pub probes: Arc<ProbeLink>,
    pub video: SendTrack,
    pub audio: Option<SendTrack>,
}

/// A local track, the sender it was added with, and its SSRC.
pub(super) type SendTrack = (Arc<TrackLocalStaticRTP>, Arc<dyn RtpSender>, u32);

fn internal_err(e: webrtc::error::Error) -> Reject {
    Reject(ErrorCode::Internal, e.to_string())
}

/// Codecs (the session's video codec only, so the answer cannot pick another, with
/// its RTX; Opus when offered) with the interceptors: NACK responder and probe padding
/// ([`Retransmitter`]), RTCP reports, TWCC (sequence numbers out, on the RTX stream
/// too; feedback in and out), send-side congestion control ([`LadderEstimator`]: GCC
/// over TWCC with probes, starting at `estimate`'s value and publishing each new
/// target there through [`EstimateTap`]), and [`KeyframeFeedback`], which reports
/// PLI/FIR on `keyframe`.
fn media_engine(
    (video, profile_level_id): (VideoCodec, &str),
    audio: bool,
    keyframe: mpsc::Sender<()>,
    estimate: watch::Sender<f64>,
    resends: Arc<ResendCounters>,
    probes: Arc<ProbeLink>,
) -> Result<(MediaEngine, Registry), Reject> {
    let mut engine = MediaEngine::default();
    let (video_pt, rtx_pt) = match video {
        VideoCodec::H264 => (H264_PT, H264_RTX_PT),
        VideoCodec::Vp8 => (VP8_PT, VP8_RTX_PT),
    };
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec_video(video, profile_level_id),
                payload_type: video_pt,
            },
            RtpCodecKind::Video,
        )
        .map_err(internal_err)?;
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={video_pt}"),
                    rtcp_feedback: vec![],
                },
                payload_type: rtx_pt,
            },
            RtpCodecKind::Video,
        )
        .map_err(internal_err)?;
    if audio {
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec_opus(),
                    payload_type: OPUS_PT,
                },
                RtpCodecKind::Audio,
            )
            .map_err(internal_err)?;
    }
    // Not `register_default_interceptors`: it registers a TWCC receiver only, and the
    // congestion controller needs the sender's sequence numbers as well.
    // NACK: the codecs carry `nack`/`nack pli`; edgecam's responder, not `rtc`'s (see
    // `peer::retransmit`). No NACK generator: the camera receives only talk-back Opus.
    let initial = *estimate.borrow();
    let registry = configure_rtcp_reports(Registry::new()).with(
        Slot::NackResponder,
        Retransmitter::new(initial, resends, probes.clone()),
    );
    // REMB for a viewer without TWCC (`peer::estimate::LossEstimate`); browsers with
    // TWCC send none.
    engine.register_feedback(
        RTCPFeedback {
            typ: "goog-remb".to_owned(),
            parameter: String::new(),
        },
        RtpCodecKind::Video,
    );
    // As `rtc`'s `configure_twcc`, with the sender and the controller seeing the RTX
    // stream too (`peer::rtx_bind`).
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                },
                kind,
                None,
            )
            .map_err(internal_err)?;
    }
    let estimator = LadderEstimator::new(initial, GCC_MIN_BITRATE, initial * 1.5, probes);
    let registry = registry
        .with(Slot::TwccSender, BindRtx(TwccSenderBuilder::new().build()))
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
        .with(
            Slot::CongestionControl,
            BindRtx(CongestionControlBuilder::new(estimator).build()),
        )
        .with(
            Slot::from(estimate::SLOT),
            EstimateTap::new(estimate, GCC_MIN_BITRATE, initial * 1.5),
        )
        .with(Slot::from(feedback::SLOT), KeyframeFeedback::new(keyframe));
    Ok((engine, registry))
}

/// The camera's ICE servers for this session, TURN REST credentials minted now.
pub(super) fn ice_servers(ctx: &SessionCtx) -> Vec<RTCIceServer> {
    ctx.settings
        .ice
        .camera_servers(&ctx.settings.camera, &ctx.id, crate::ice::unix_now())
        .into_iter()
        .map(|s| RTCIceServer {
            urls: s.urls,
            username: s.username.unwrap_or_default(),
            credential: s.credential.unwrap_or_default(),
        })
        .collect()
}

pub(super) fn transport_policy(ctx: &SessionCtx) -> RTCIceTransportPolicy {
    if ctx.settings.ice.transport_policy == crate::config::IceTransportPolicy::Relay {
        RTCIceTransportPolicy::Relay
    } else {
        RTCIceTransportPolicy::All
    }
}

/// `ip:port` for each address; empty `ips` = `default` (or nothing when `None`).
fn socket_addrs(ips: &[IpAddr], default: Option<IpAddr>, port: u16) -> Vec<String> {
    let ips: Vec<IpAddr> = if ips.is_empty() {
        default.into_iter().collect()
    } else {
        ips.to_vec()
    };
    ips.into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, port).to_string())
        .collect()
}

/// Builds the session's peer connection. `video`: the codec sent (with the H.264
/// rung's `profile-level-id`); `audio`: the viewer receives audio; `talk`: the viewer
/// sends audio and the camera plays it (`[audio] playback_device`);
/// `initial_estimate`: where the bandwidth estimate starts, bits per second.
pub(super) async fn build(
    ctx: &SessionCtx,
    video: (VideoCodec, &str),
    (audio, talk): (bool, bool),
    initial_estimate: f64,
) -> Result<Built, Reject> {
    let policy = transport_policy(ctx);
    let ice_servers = ice_servers(ctx);
    let (tx, internal) = mpsc::unbounded_channel();
    let settings = &ctx.settings;
    let build_pc = async |mode: MulticastDnsMode, port: u16| {
        // Capacity 1: PLIs arriving while one is pending coalesce (`KeyframeFeedback`).
        let (keyframe_tx, keyframe_rx) = mpsc::channel(1);
        let (estimate_tx, estimate_rx) = watch::channel(initial_estimate);
        let probes = Arc::new(ProbeLink::default());
        let (engine, registry) = media_engine(
            video,
            audio || talk,
            keyframe_tx,
            estimate_tx,
            ctx.stats.resends.clone(),
            probes.clone(),
        )?;
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(mode)
            .with_ice_connection_attempts(Some(Duration::from_millis(50)), None)
            .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server);
        // Empty `udp_bind` = the wildcard, which webrtc-rs expands to one socket per
        // non-loopback interface address.
        let unspecified = Some(IpAddr::from([0, 0, 0, 0]));
        PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers.clone())
                    .with_ice_transport_policy(policy)
                    .build(),
            )
            .with_setting_engine(setting_engine.build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler { tx: tx.clone() }))
            // A viewer that stops reading its control channel holds at most this much
            // of the camera's memory: sends wait for room instead of queueing more.
            .with_data_channel_send_buffer_limit(DATA_CHANNEL_SEND_LIMIT)
            .with_udp_addrs(socket_addrs(&settings.udp_bind, unspecified, port))
            .with_tcp_addrs(socket_addrs(&settings.tcp_bind, None, port))
            .build()
            .await
            .map(|pc| {
                (
                    Arc::new(pc) as Arc<dyn PeerConnection>,
                    keyframe_rx,
                    estimate_rx,
                    probes,
                )
            })
            .map_err(internal_err)
    };
    // mDNS in query mode resolves viewers' `.local` host candidates, but needs a multicast
    // socket; where the host has no multicast route (containers, bare network
    // namespaces) that bind fails with ENODEV, so fall back to no mDNS: viewers' checks
    // then arrive as peer-reflexive candidates, which ICE accepts. It is switched off
    // for the process only when disabling it is what made the build succeed.
    let attempts = settings.ports.attempts();
    let mut last_error = String::new();
    let mut built = None;
    for _ in 0..attempts {
        let port = settings.ports.take();
        let result = if MDNS_UNAVAILABLE.load(Ordering::Relaxed) {
            build_pc(MulticastDnsMode::Disabled, port).await
        } else {
            match build_pc(MulticastDnsMode::QueryOnly, port).await {
                Ok(pc) => Ok(pc),
                Err(Reject(_, first)) => {
                    let retry = build_pc(MulticastDnsMode::Disabled, port).await;
                    if retry.is_ok() && !MDNS_UNAVAILABLE.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "mDNS unavailable ({first}); continuing without resolving .local candidates"
                        );
                    }
                    retry
                }
            }
        };
        match result {
            Ok(pc) => {
                built = Some(pc);
                break;
            }
            // Another session (or program) holds this port of the range: try the next.
            Err(Reject(_, e)) if attempts > 1 && port_in_use(&settings.udp_bind, port) => {
                log::debug!(session_id = ctx.id.as_str(); "port {port} busy: {e}");
                last_error = e;
            }
            Err(e) => return Err(e),
        }
    }
    let Some((pc, keyframe_requests, estimate, probes)) = built else {
        log::warn!(session_id = ctx.id.as_str(); "no free port in webrtc.port_range ({attempts} tried): {last_error}");
        return Err(Reject(
            ErrorCode::Busy,
            "camera has no free ICE port, retry later".into(),
        ));
    };
    let video_ssrc = rand::random::<u32>();
    let video_track = local_track(
        RtpCodecKind::Video,
        codec_video(video.0, video.1),
        video_ssrc,
        Some(rand::random::<u32>()),
    );
    let video_sender = pc
        .add_track(video_track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(internal_err)?;
    // `add_track` makes a sendrecv transceiver; [`answer`] narrows it to sendonly
    // unless this viewer may talk.
    let mut recvonly_audio = None;
    let audio = if audio && ctx.media.audio.is_some() {
        let ssrc = rand::random::<u32>();
        let track = local_track(RtpCodecKind::Audio, codec_opus(), ssrc, None);
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(internal_err)?;
        Some((track, sender, ssrc))
    } else {
        if talk {
            // A camera without a microphone still has a speaker: receive only.
            let t = pc
                .add_transceiver_from_kind(
                    RtpCodecKind::Audio,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .await
                .map_err(internal_err)?;
            recvonly_audio = Some(t.id());
        }
        None
    };
    Ok(Built {
        pc,
        receive: Receive {
            talk,
            recvonly_audio,
        },
        internal,
        keyframe_requests,
        estimate,
        probes,
        video: (video_track, video_sender, video_ssrc),
        audio,
    })
}

/// Whether UDP `port` is held by another socket on the addresses a session binds
/// (`udp_bind`, or the wildcard). webrtc-rs 0.21.1 logs its bind error and returns only
/// "no udp_sockets or tcp_listeners available", so the error kind
/// ([`std::io::ErrorKind::AddrInUse`]) is read from a bind attempt of our own.
fn port_in_use(udp_bind: &[IpAddr], port: u16) -> bool {
    port != 0
        && socket_addrs(udp_bind, Some(IpAddr::from([0, 0, 0, 0])), port)
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .any(|a| {
                std::net::UdpSocket::bind(a)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
            })
}

/// Applies an offer and returns the answer SDP. The camera receives only a talking
/// viewer's audio (`receive`); every other m-line the viewer offers to send on is
/// answered `sendonly`, or `inactive` where the camera sends nothing either (RFC 3264
/// §6.1), so a browser never sends media nobody plays.
pub(super) async fn answer(
    pc: &Arc<dyn PeerConnection>,
    sdp: String,
    receive: Receive,
) -> Result<String, Reject> {
    let bad = |e: webrtc::error::Error| Reject(ErrorCode::BadOffer, e.to_string());
    let offer = RTCSessionDescription::offer(sdp).map_err(bad)?;
    pc.set_remote_description(offer).await.map_err(bad)?;
    for t in pc.get_transceivers().await {
        let direction = t.direction().await.map_err(internal_err)?;
        let kind = match t.sender().await.ok().flatten() {
            Some(sender) => Some(sender.track().kind().await),
            None => None,
        };
        let narrowed = match direction {
            RTCRtpTransceiverDirection::Sendrecv
                if !(receive.talk && kind == Some(RtpCodecKind::Audio)) =>
            {
                RTCRtpTransceiverDirection::Sendonly
            }
            RTCRtpTransceiverDirection::Recvonly
                if !(receive.talk && receive.recvonly_audio == Some(t.id())) =>
            {
                RTCRtpTransceiverDirection::Inactive
            }
            _ => continue,
        };
        t.set_direction(narrowed).await.map_err(internal_err)?;
    }
    let answer = pc.create_answer(None).await.map_err(bad)?;
    pc.set_local_description(answer).await.map_err(bad)?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| Reject(ErrorCode::Internal, "no local description".into()))
}
