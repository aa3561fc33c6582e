//! One viewer session: an `RTCPeerConnection` that answers the viewer's offer with
//! sendonly H.264 (+ Opus when offered), fed from the hubs. RTP is packetized here with
//! timestamps from the frame PTS (RFC 3550 §5.1: sampling instant, never a wall-clock
//! ticker), sequence numbers per sender, and written through `TrackLocalStaticRTP`.

use super::feedback::{self, KeyframeFeedback};
use super::sdp::{SendCapability, check_offer};
use super::stats::{LatencyHistogram, SessionStats};
use super::{MediaFeeds, PeerReport, PeerSettings};
use crate::media::MediaKind;
use crate::media::hub::Subscription;
use crate::signaling::machine::PeerEvent;
use crate::signaling::protocol::{CandidateInit, ErrorCode, SessionId};
use crate::telemetry;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceConnectionState, RTCIceGatheringState,
    RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// RTP packet size budget, bytes: fits the 1280-byte IPv6 minimum MTU with SRTP and
/// TURN overhead, as browsers do.
const RTP_MTU: usize = 1200;
/// Longest wait for the encoder's first keyframe before refusing an offer.
const FORMAT_WAIT: Duration = Duration::from_secs(5);
/// Opus and H.264 payload types we register; the answer uses the offer's numbers.
const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;

/// Set once mDNS sockets turned out to be unavailable on this host.
static MDNS_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Work for a running session, in arrival order.
#[derive(Debug)]
pub(crate) enum SessionCmd {
    /// A renegotiation offer.
    Offer(String),
    /// A remote candidate or end of candidates.
    Candidate(Option<CandidateInit>),
}

/// What one session task needs.
pub(crate) struct SessionCtx {
    pub id: SessionId,
    pub generation: u64,
    pub settings: Arc<PeerSettings>,
    pub media: MediaFeeds,
    pub events: mpsc::UnboundedSender<PeerReport>,
    pub cancel: CancellationToken,
    pub stats: Arc<SessionStats>,
    pub latency: Arc<LatencyHistogram>,
}

impl SessionCtx {
    fn report(&self, event: PeerEvent) {
        let _ = self.events.send(PeerReport {
            session: self.id.clone(),
            generation: self.generation,
            event,
        });
    }
}

enum Internal {
    Candidate(RTCIceCandidateInit),
    GatheringComplete,
    Ice(RTCIceConnectionState),
    State(RTCPeerConnectionState),
}

struct Handler {
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
}

/// Why a session could not be set up; becomes `OfferRejected`.
struct Reject(ErrorCode, String);

fn codec_h264(profile_level_id: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
        ),
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

fn codec_opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
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
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

struct Built {
    pc: Arc<dyn PeerConnection>,
    internal: mpsc::UnboundedReceiver<Internal>,
    keyframe_requests: mpsc::UnboundedReceiver<()>,
    video: (Arc<TrackLocalStaticRTP>, Arc<dyn RtpSender>, u32),
    audio: Option<(Arc<TrackLocalStaticRTP>, Arc<dyn RtpSender>, u32)>,
}

fn internal_err(e: webrtc::error::Error) -> Reject {
    Reject(ErrorCode::Internal, e.to_string())
}

/// Codecs (our H.264 profile, Opus when offered) with the default interceptors (NACK
/// responder, RTCP reports, TWCC) plus [`KeyframeFeedback`], which reports PLI/FIR on
/// `keyframe`.
fn media_engine(
    profile_level_id: &str,
    audio: bool,
    keyframe: mpsc::UnboundedSender<()>,
) -> Result<(MediaEngine, Registry), Reject> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec_h264(profile_level_id),
                payload_type: H264_PT,
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
    let registry = register_default_interceptors(Registry::new(), &mut engine)
        .map_err(internal_err)?
        .with(Slot::from(feedback::SLOT), KeyframeFeedback::new(keyframe));
    Ok((engine, registry))
}

/// The camera's ICE servers for this session, TURN REST credentials minted now.
fn ice_servers(ctx: &SessionCtx) -> Vec<RTCIceServer> {
    ctx.settings
        .ice
        .camera_servers(&ctx.settings.camera, &ctx.id, super::ice::unix_now())
        .into_iter()
        .map(|s| RTCIceServer {
            urls: s.urls,
            username: s.username.unwrap_or_default(),
            credential: s.credential.unwrap_or_default(),
        })
        .collect()
}

fn transport_policy(ctx: &SessionCtx) -> RTCIceTransportPolicy {
    if ctx.settings.ice.transport_policy == "relay" {
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

async fn build(ctx: &SessionCtx, profile_level_id: &str, audio: bool) -> Result<Built, Reject> {
    let policy = transport_policy(ctx);
    let ice_servers = ice_servers(ctx);
    let (tx, internal) = mpsc::unbounded_channel();
    let settings = &ctx.settings;
    let build_pc = async |mode: MulticastDnsMode, port: u16| {
        let (keyframe_tx, keyframe_rx) = mpsc::unbounded_channel();
        let (engine, registry) = media_engine(profile_level_id, audio, keyframe_tx)?;
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
            .with_udp_addrs(socket_addrs(&settings.udp_bind, unspecified, port))
            .with_tcp_addrs(socket_addrs(&settings.tcp_bind, None, port))
            .build()
            .await
            .map(|pc| (Arc::new(pc) as Arc<dyn PeerConnection>, keyframe_rx))
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
            Err(Reject(_, e)) if attempts > 1 && e.contains("in use") => {
                log::debug!(session_id = ctx.id.as_str(); "port {port} busy: {e}");
                last_error = e;
            }
            Err(e) => return Err(e),
        }
    }
    let Some((pc, keyframe_requests)) = built else {
        log::warn!(session_id = ctx.id.as_str(); "no free port in webrtc.port_range ({attempts} tried): {last_error}");
        return Err(Reject(
            ErrorCode::Busy,
            "camera has no free ICE port, retry later".into(),
        ));
    };
    let video_ssrc = rand::random::<u32>();
    let video_track = local_track(
        RtpCodecKind::Video,
        codec_h264(profile_level_id),
        video_ssrc,
    );
    let video_sender = pc
        .add_track(video_track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(internal_err)?;
    let audio = if audio && ctx.media.audio.is_some() {
        let ssrc = rand::random::<u32>();
        let track = local_track(RtpCodecKind::Audio, codec_opus(), ssrc);
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(internal_err)?;
        Some((track, sender, ssrc))
    } else {
        None
    };
    Ok(Built {
        pc,
        internal,
        keyframe_requests,
        video: (video_track, video_sender, video_ssrc),
        audio,
    })
}

/// Applies an offer and returns the answer SDP.
async fn answer(pc: &Arc<dyn PeerConnection>, sdp: String) -> Result<String, Reject> {
    let bad = |e: webrtc::error::Error| Reject(ErrorCode::BadOffer, e.to_string());
    let offer = RTCSessionDescription::offer(sdp).map_err(bad)?;
    pc.set_remote_description(offer).await.map_err(bad)?;
    let answer = pc.create_answer(None).await.map_err(bad)?;
    pc.set_local_description(answer).await.map_err(bad)?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| Reject(ErrorCode::Internal, "no local description".into()))
}

/// Runs one session until it is cancelled or fails. Never panics on viewer input.
pub(crate) async fn run(
    ctx: SessionCtx,
    first_offer: String,
    mut cmds: mpsc::UnboundedReceiver<SessionCmd>,
) {
    let mut format_rx = ctx.media.format.clone();
    let format = tokio::select! {
        f = tokio::time::timeout(FORMAT_WAIT, format_rx.wait_for(Option::is_some)) => {
            f.ok().and_then(Result::ok).and_then(|f| f.clone())
        }
        () = ctx.cancel.cancelled() => return,
    };
    let Some(format) = format else {
        ctx.report(PeerEvent::OfferRejected {
            code: ErrorCode::Internal,
            message: "camera has not produced video yet, retry shortly".into(),
        });
        return;
    };
    let cap = SendCapability {
        profile_level_id: format.profile_level_id.clone(),
    };
    let info = match check_offer(&first_offer, &cap) {
        Ok(info) => info,
        Err(e) => {
            ctx.report(PeerEvent::OfferRejected {
                code: ErrorCode::BadOffer,
                message: e.to_string(),
            });
            return;
        }
    };
    let built = match build(&ctx, &cap.profile_level_id, info.audio).await {
        Ok(b) => b,
        Err(Reject(code, message)) => {
            ctx.report(PeerEvent::OfferRejected { code, message });
            return;
        }
    };
    let Built {
        pc,
        mut internal,
        keyframe_requests,
        video,
        audio,
    } = built;
    match answer(&pc, first_offer).await {
        Ok(sdp) => ctx.report(PeerEvent::Answer(sdp)),
        Err(Reject(code, message)) => {
            ctx.report(PeerEvent::OfferRejected { code, message });
            let _ = pc.close().await;
            return;
        }
    }

    let media_cancel = ctx.cancel.child_token();
    let (live_tx, live_rx) = watch::channel(false);
    let video_sub = Arc::new(ctx.media.video.subscribe());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(feed(
        MediaKind::Video,
        video.0.clone(),
        video.1.clone(),
        video.2,
        video_sub.clone(),
        live_rx.clone(),
        ctx.stats.clone(),
        ctx.latency.clone(),
        media_cancel.clone(),
    ));
    tasks.spawn(forward_keyframe_requests(
        keyframe_requests,
        video_sub.clone(),
        ctx.stats.clone(),
        media_cancel.clone(),
    ));
    if let (Some((track, sender, ssrc)), Some(hub)) = (audio, ctx.media.audio.as_ref()) {
        let sub = Arc::new(hub.subscribe());
        tasks.spawn(feed(
            MediaKind::Audio,
            track.clone(),
            sender,
            ssrc,
            sub,
            live_rx.clone(),
            ctx.stats.clone(),
            ctx.latency.clone(),
            media_cancel.clone(),
        ));
    }

    let mut ice_state = RTCIceConnectionState::New;
    let mut gathered = Gathered::default();
    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => break,
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(SessionCmd::Candidate(Some(c))) => {
                    let init = RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_mline_index,
                        username_fragment: c.username_fragment,
                        ..Default::default()
                    };
                    if let Err(e) = pc.add_ice_candidate(init).await {
                        // Contract: unusable candidate lines are skipped with a log line.
                        log::info!(session_id = ctx.id.as_str(); "skipping remote candidate: {e}");
                    }
                }
                Some(SessionCmd::Candidate(None)) => {
                    // End of candidates is only a hint: peer-reflexive candidates and
                    // connectivity checks may still arrive, so ICE is never failed here.
                    log::debug!(session_id = ctx.id.as_str(); "viewer signalled end of candidates");
                }
                Some(SessionCmd::Offer(sdp)) => {
                    if let Err(e) = check_offer(&sdp, &cap) {
                        ctx.report(PeerEvent::OfferRejected { code: ErrorCode::BadOffer, message: e.to_string() });
                        break;
                    }
                    if ctx.settings.ice.camera_mints() {
                        // A renegotiation is usually an ICE restart (network change, or
                        // the viewer's credentials refresh): the camera's own TURN REST
                        // credentials are renewed with it so its allocations outlive them.
                        // Same defaults as at build, so only servers and policy change.
                        let config = RTCConfigurationBuilder::new()
                            .with_ice_servers(ice_servers(&ctx))
                            .with_ice_transport_policy(transport_policy(&ctx))
                            .build();
                        if let Err(e) = pc.set_configuration(config).await {
                            log::warn!(session_id = ctx.id.as_str(); "cannot renew TURN credentials: {e}");
                        }
                    }
                    gathered = Gathered::default();
                    match answer(&pc, sdp).await {
                        Ok(sdp) => {
                            ctx.report(PeerEvent::Answer(sdp));
                            if matches!(ice_state, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed) {
                                // No ICE restart: the session is still connected.
                                ctx.report(PeerEvent::Connected);
                            }
                        }
                        Err(Reject(code, message)) => {
                            ctx.report(PeerEvent::OfferRejected { code, message });
                            break;
                        }
                    }
                }
            },
            ev = internal.recv() => match ev {
                None => break,
                Some(Internal::Candidate(init)) => {
                    gathered.count(&init.candidate);
                    let lines = match &ctx.settings.nat_1to1_ip {
                        Some(public) => super::ice::nat_1to1_candidates(&init.candidate, public, ctx.settings.nat_1to1_srflx),
                        None => vec![init.candidate.clone()],
                    };
                    for candidate in lines {
                        ctx.report(PeerEvent::LocalCandidate(Some(CandidateInit {
                            candidate,
                            sdp_mid: init.sdp_mid.clone().filter(|m| !m.is_empty()).or_else(|| Some("0".into())),
                            sdp_mline_index: init.sdp_mline_index,
                            username_fragment: init.username_fragment.clone(),
                        })));
                    }
                }
                Some(Internal::GatheringComplete) => {
                    ctx.report(PeerEvent::LocalCandidate(None));
                    log::info!(session_id = ctx.id.as_str(); "ICE gathering complete: {gathered}");
                    if ctx.settings.ice.camera_has_turn() && gathered.relay == 0 {
                        log::warn!(session_id = ctx.id.as_str(); "no relay candidate from the TURN server(s): allocation refused or unreachable (wrong/expired credentials or secret, or TURN port blocked); see the webrtc log line above");
                        if transport_policy(&ctx) == RTCIceTransportPolicy::Relay {
                            ctx.report(PeerEvent::Failed("relay-only camera got no TURN allocation".into()));
                            break;
                        }
                    }
                }
                Some(Internal::Ice(state)) => {
                    log::debug!(session_id = ctx.id.as_str(); "ICE connection state {state}");
                    ice_state = state;
                    if matches!(state, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed) {
                        ctx.report(PeerEvent::Connected);
                        // After an ICE restart the path may have changed.
                        if let Some((pair, remote)) = selected_pair(&pc).await {
                            let mut current = ctx.stats.candidate_pair.lock().unwrap_or_else(|p| p.into_inner());
                            if current.as_deref() != Some(pair.as_str()) {
                                let peer_addr = remote.map_or_else(|| "?".to_owned(), |(ip, port)| {
                                    telemetry::peer_addr(ip, port, ctx.settings.redact_peer_addr)
                                });
                                log::info!(session_id = ctx.id.as_str(), peer_addr = peer_addr.as_str(); "media flowing over {pair}");
                                *current = Some(pair);
                            }
                        }
                    }
                }
                Some(Internal::State(state)) => {
                    log::info!(session_id = ctx.id.as_str(); "peer connection {state}");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            live_tx.send_replace(true);
                        }
                        RTCPeerConnectionState::Failed => {
                            ctx.report(PeerEvent::Failed("ICE/DTLS failed".into()));
                            break;
                        }
                        RTCPeerConnectionState::Closed => {
                            ctx.report(PeerEvent::Failed("peer connection closed".into()));
                            break;
                        }
                        _ => {}
                    }
                }
            },
        }
    }
    media_cancel.cancel();
    while tasks.join_next().await.is_some() {}
    if let Err(e) = pc.close().await {
        log::debug!(session_id = ctx.id.as_str(); "close: {e}");
    }
    log::info!(session_id = ctx.id.as_str(); "session {} closed", ctx.id);
}

/// Local candidates gathered for the current ICE generation, by type (RFC 8445 §5.1.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Gathered {
    host: u32,
    srflx: u32,
    relay: u32,
    tcp: u32,
}

impl Gathered {
    /// Counts one `candidate:` line (RFC 8839 §5.1: `… typ <type> …`).
    fn count(&mut self, line: &str) {
        let mut fields = line.split_ascii_whitespace();
        if fields.nth(2).is_some_and(|t| t.eq_ignore_ascii_case("tcp")) {
            self.tcp += 1;
        }
        let mut fields = line.split_ascii_whitespace();
        match fields.by_ref().skip_while(|f| *f != "typ").nth(1) {
            Some("host") => self.host += 1,
            Some("srflx") => self.srflx += 1,
            Some("relay") => self.relay += 1,
            _ => {}
        }
    }
}

impl std::fmt::Display for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} host, {} srflx, {} relay ({} over TCP)",
            self.host, self.srflx, self.relay, self.tcp
        )
    }
}

/// The selected candidate pair (W3C webrtc-stats §7.8, §7.11): `local-type/remote-type
/// protocol` (e.g. `host/prflx udp`) and the viewer's address on it, when known.
async fn selected_pair(pc: &Arc<dyn PeerConnection>) -> Option<(String, Option<(IpAddr, u16)>)> {
    use webrtc::peer_connection::RTCStatsReportEntry as E;
    let report = pc
        .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
        .await;
    let pair_id = report.iter().find_map(|e| match e {
        E::Transport(t) if !t.selected_candidate_pair_id.is_empty() => {
            Some(t.selected_candidate_pair_id.clone())
        }
        _ => None,
    })?;
    let (local_id, remote_id) = match report.get(&pair_id)? {
        E::IceCandidatePair(p) => (p.local_candidate_id.clone(), p.remote_candidate_id.clone()),
        _ => return None,
    };
    // webrtc-rs 0.21 names candidate entries `RTCLocalIceCandidate_<id>` /
    // `RTCRemoteIceCandidate_<id>` while the pair holds the bare ids; a peer-reflexive
    // remote candidate has no entry at all.
    let candidate = |prefix: &str, id: &str| {
        [id.to_owned(), format!("{prefix}{id}")]
            .iter()
            .find_map(|key| match report.get(key) {
                Some(E::LocalCandidate(c) | E::RemoteCandidate(c)) => Some(c),
                _ => None,
            })
    };
    let local = candidate("RTCLocalIceCandidate_", &local_id)?;
    let remote = candidate("RTCRemoteIceCandidate_", &remote_id);
    let remote_type = remote
        .as_ref()
        .map_or_else(|| "?".to_owned(), |c| c.candidate_type.to_string());
    let remote_addr = remote.and_then(|c| Some((c.address.as_deref()?.parse().ok()?, c.port)));
    let pair = format!("{}/{remote_type} {}", local.candidate_type, local.protocol).to_lowercase();
    Some((pair, remote_addr))
}

#[allow(clippy::too_many_arguments)]
async fn feed(
    kind: MediaKind,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    sub: Arc<Subscription>,
    mut live: watch::Receiver<bool>,
    stats: Arc<SessionStats>,
    latency: Arc<LatencyHistogram>,
    cancel: CancellationToken,
) {
    tokio::select! {
        r = live.wait_for(|l| *l) => if r.is_err() { return; },
        () = cancel.cancelled() => return,
    }
    let params = match sender.get_parameters().await {
        Ok(p) => p,
        Err(e) => {
            log::warn!("no negotiated parameters for {kind:?}: {e}");
            return;
        }
    };
    let Some(codec) = params.rtp_parameters.codecs.first() else {
        log::warn!("no negotiated codec for {kind:?}");
        return;
    };
    let payload_type = codec.payload_type;
    let clock_rate = u128::from(codec.rtp_codec.clock_rate);
    let mut payloader = match codec.rtp_codec.payloader() {
        Ok(p) => p,
        Err(e) => {
            log::warn!("no payloader for {}: {e}", codec.rtp_codec.mime_type);
            return;
        }
    };
    if kind == MediaKind::Video {
        // Start this viewer at a fresh IDR with SPS/PPS, now that it can receive.
        sub.resync();
    } else {
        while sub.try_recv().is_some() {}
    }
    let mut seq: u16 = rand::random();
    let ts_base: u32 = rand::random();
    let mut last_drop_log = Instant::now();
    loop {
        let frame = tokio::select! {
            f = sub.recv() => match f { Some(f) => f, None => break },
            () = cancel.cancelled() => break,
        };
        // RTP timestamp from the capture PTS (wraps modulo 2^32 as RFC 3550 intends).
        let ticks = frame.pts.as_nanos() * clock_rate / 1_000_000_000;
        let timestamp = ts_base.wrapping_add(ticks as u32);
        let payloads = match payloader.payload(RTP_MTU - 12, &frame.data) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot packetize {kind:?} frame: {e}");
                continue;
            }
        };
        let last = payloads.len().saturating_sub(1);
        let mut bytes = 0u64;
        for (i, payload) in payloads.into_iter().enumerate() {
            bytes += payload.len() as u64;
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    marker: i == last && kind == MediaKind::Video,
                    payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload,
            };
            seq = seq.wrapping_add(1);
            if let Err(e) = track.write_rtp(packet).await {
                log::debug!("write_rtp: {e}");
                return;
            }
        }
        latency.record(frame.captured_at.elapsed());
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        match kind {
            MediaKind::Video => stats.video_frames.fetch_add(1, Ordering::Relaxed),
            MediaKind::Audio => stats.audio_packets.fetch_add(1, Ordering::Relaxed),
        };
        if last_drop_log.elapsed() >= Duration::from_secs(5) {
            let dropped = sub.take_dropped();
            if dropped > 0 {
                stats.dropped_frames.fetch_add(dropped, Ordering::Relaxed);
                log::warn!("slow viewer: dropped {dropped} {kind:?} frames in the last 5 s");
            }
            last_drop_log = Instant::now();
        }
    }
}

/// Turns PLI/FIR from the viewer (reported by [`KeyframeFeedback`]) into keyframe
/// requests, which the hub coalesces with every other viewer's.
async fn forward_keyframe_requests(
    mut requests: mpsc::UnboundedReceiver<()>,
    sub: Arc<Subscription>,
    stats: Arc<SessionStats>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            r = requests.recv() => match r {
                Some(()) => {
                    stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    log::debug!("PLI/FIR from viewer: requesting a keyframe");
                    sub.request_keyframe();
                }
                None => return,
            },
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gathered;

    #[test]
    fn counts_candidate_types_and_tcp() {
        let mut g = Gathered::default();
        g.count("candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host");
        g.count("candidate:2 1 tcp 1671430143 10.0.0.2 50000 typ host tcptype passive");
        g.count("candidate:3 1 udp 16777215 10.199.0.1 49152 typ relay raddr 10.0.0.2 rport 50000");
        g.count("candidate:4 1 UDP 1694498815 203.0.113.7 50000 typ srflx raddr 0.0.0.0 rport 0");
        g.count("garbage");
        assert_eq!(
            g,
            Gathered {
                host: 2,
                srflx: 1,
                relay: 1,
                tcp: 1
            }
        );
        assert_eq!(g.to_string(), "2 host, 1 srflx, 1 relay (1 over TCP)");
    }
}
