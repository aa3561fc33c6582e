//! Offer validation before a peer connection is built, over `rtc`'s SDP parser
//! (RFC 8866): the contract's `bad-offer` cases, with a reason for the viewer, and the
//! video codec the viewer gets (H.264, else the VP8 rung).

use rtc::sdp::description::session::SessionDescription;
use std::io::Cursor;

/// What the camera can send, as far as offer validation is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCapability {
    /// `profile-level-id` the encoder emits (see `media::h264::profile_level_id`).
    pub profile_level_id: String,
    /// The camera has a VP8 rung for viewers without H.264.
    pub vp8: bool,
}

/// The video codec a viewer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// The H.264 rung (RFC 6184), preferred whenever the offer has a usable payload.
    H264,
    /// The VP8 rung (RFC 7741), for offers without a usable H.264 payload.
    Vp8,
}

impl VideoCodec {
    /// The codec's name as `/api/stats` and the logs show it: `H264` or `VP8`.
    pub fn name(self) -> &'static str {
        match self {
            Self::H264 => "H264",
            Self::Vp8 => "VP8",
        }
    }
}

/// What a valid offer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferInfo {
    /// The offer has an audio m-line the viewer receives on (`recvonly`/`sendrecv`).
    pub audio: bool,
    /// The offer has an audio m-line the viewer sends on (`sendrecv`/`sendonly`):
    /// it can talk through the camera's speaker.
    pub talk: bool,
    /// The video codec of the answer.
    pub video: VideoCodec,
}

/// Why an offer was refused (all map to `bad-offer`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Not parseable as SDP.
    #[error("SDP does not parse: {0}")]
    Unparseable(String),
    /// No video m-line the viewer receives on.
    #[error("no recvonly/sendrecv video m-line")]
    NoVideo,
    /// A video m-line, but no payload this camera can send: H.264 with
    /// `packetization-mode=1` and the camera's profile (`profile-level-id`, here), nor
    /// VP8 where the camera has a VP8 rung (`vp8`).
    #[error(
        "this browser offers no video codec the camera can send (the camera sends H.264 \
         with packetization-mode=1 and profile {profile}{})",
        if *vp8 { ", or VP8" } else { "; VP8 is off" }
    )]
    NoCodec {
        /// The camera's H.264 `profile-level-id`.
        profile: String,
        /// Whether the camera offered VP8 as well.
        vp8: bool,
    },
}

/// Checks that `sdp` is an offer this camera can answer: it parses, has a video m-line
/// with direction `recvonly` or `sendrecv` (RFC 8866 §6.7; absent means `sendrecv`),
/// and offers H.264 (RFC 6184) with `packetization-mode=1` and the same profile
/// (`profile_idc` and `profile-iop`; the level may differ, RFC 6184 §8.2.2), or else
/// VP8 (RFC 7741) when the camera has a VP8 rung.
///
/// # Errors
/// [`OfferError`] naming the first problem.
pub fn check_offer(sdp: &str, cap: &SendCapability) -> Result<OfferInfo, OfferError> {
    let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| OfferError::Unparseable(e.to_string()))?;
    // Port 0 rejects an m-line, unless it is `bundle-only` (RFC 8843 §6): an offerer
    // such as GStreamer's webrtcbin (max-bundle) marks every m-line but the first that
    // way, and they carry media over the first one's transport.
    let open = |m: &rtc::sdp::description::media::MediaDescription| {
        m.media_name.port.value != 0 || m.attributes.iter().any(|a| a.key == "bundle-only")
    };
    let has = |m: &rtc::sdp::description::media::MediaDescription, key: &str| {
        m.attributes.iter().any(|a| a.key == key)
    };
    let receives = |m: &rtc::sdp::description::media::MediaDescription| {
        !has(m, "sendonly") && !has(m, "inactive") && open(m)
    };
    let sends = |m: &rtc::sdp::description::media::MediaDescription| {
        !has(m, "recvonly") && !has(m, "inactive") && open(m)
    };
    let audio = desc
        .media_descriptions
        .iter()
        .any(|m| m.media_name.media == "audio" && receives(m));
    let talk = desc
        .media_descriptions
        .iter()
        .any(|m| m.media_name.media == "audio" && sends(m));
    let mut saw_video = false;
    let mut vp8 = false;
    for media in desc
        .media_descriptions
        .iter()
        .filter(|m| m.media_name.media == "video" && receives(m))
    {
        saw_video = true;
        let rtpmaps = || {
            media
                .attributes
                .iter()
                .filter(|a| a.key == "rtpmap")
                .filter_map(|a| a.value.as_deref())
                .filter_map(|v| v.split_once(' '))
        };
        vp8 |= rtpmaps().any(|(_, codec)| codec.eq_ignore_ascii_case("vp8/90000"));
        let h264_pts: Vec<&str> = rtpmaps()
            .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("h264/90000"))
            .map(|(pt, _)| pt)
            .collect();
        let usable = media
            .attributes
            .iter()
            .filter(|a| a.key == "fmtp")
            .filter_map(|a| a.value.as_deref())
            .filter_map(|v| v.split_once(' '))
            .filter(|(pt, _)| h264_pts.contains(pt))
            .any(|(_, params)| fmtp_compatible(params, &cap.profile_level_id));
        if usable {
            return Ok(OfferInfo {
                audio,
                talk,
                video: VideoCodec::H264,
            });
        }
    }
    if vp8 && cap.vp8 {
        Ok(OfferInfo {
            audio,
            talk,
            video: VideoCodec::Vp8,
        })
    } else if saw_video {
        Err(OfferError::NoCodec {
            profile: cap.profile_level_id.clone(),
            vp8: cap.vp8,
        })
    } else {
        Err(OfferError::NoVideo)
    }
}

fn fmtp_compatible(params: &str, ours: &str) -> bool {
    let mut mode = None;
    let mut plid = None;
    for kv in params.split(';') {
        if let Some((k, v)) = kv.trim().split_once('=') {
            match k.trim() {
                "packetization-mode" => mode = Some(v.trim()),
                "profile-level-id" => plid = Some(v.trim()),
                _ => {}
            }
        }
    }
    mode == Some("1") && plid.is_some_and(|p| same_profile(p, ours))
}

/// Whether two `profile-level-id`s (RFC 6184 §8.1: six hex digits, `profile_idc`,
/// `profile-iop`, `level_idc`) name the same profile. Compared on bytes, never by
/// slicing text: the offer's value is viewer input and may hold any UTF-8.
fn same_profile(theirs: &str, ours: &str) -> bool {
    let hex6 = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex6(theirs) && hex6(ours) && theirs.as_bytes()[..4].eq_ignore_ascii_case(&ours.as_bytes()[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> SendCapability {
        SendCapability {
            profile_level_id: "42e01f".into(),
            vp8: false,
        }
    }

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n";

    fn offer(media: &str) -> String {
        format!("{HEAD}{media}")
    }

    const VIDEO_H264: &str = "m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn accepts_a_browser_style_recvonly_h264_offer() {
        assert_eq!(
            check_offer(&offer(VIDEO_H264), &cap()),
            Ok(OfferInfo {
                audio: false,
                talk: false,
                video: VideoCodec::H264,
            })
        );
        let with_audio = format!(
            "{VIDEO_H264}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
        );
        assert_eq!(
            check_offer(&offer(&with_audio), &cap()),
            Ok(OfferInfo {
                audio: true,
                talk: false,
                video: VideoCodec::H264,
            })
        );
        // A page with a talk button offers its audio m-line sendrecv; a direction
        // left out means sendrecv too (RFC 8866 §6.7).
        for (dir, audio, talk) in [
            ("a=sendrecv\r\n", true, true),
            ("", true, true),
            ("a=sendonly\r\n", false, true),
            ("a=inactive\r\n", false, false),
        ] {
            let sdp = offer(
                &with_audio.replace("a=recvonly\r\na=rtpmap:111", &format!("{dir}a=rtpmap:111")),
            );
            assert_eq!(
                check_offer(&sdp, &cap()),
                Ok(OfferInfo {
                    audio,
                    talk,
                    video: VideoCodec::H264
                }),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn a_bundle_only_m_line_with_port_0_is_live_and_a_plain_port_0_is_not() {
        // webrtcbin (max-bundle): the second m-line rides on the first's transport.
        let bundled = format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio0\r\na=recvonly\r\na=rtpmap:111 OPUS/48000/2\r\n{}",
            VIDEO_H264
                .replace("m=video 9", "m=video 0")
                .replace("a=mid:0\r\n", "a=mid:video1\r\na=bundle-only\r\n")
        );
        assert_eq!(
            check_offer(&offer(&bundled), &cap()),
            Ok(OfferInfo {
                audio: true,
                talk: false,
                video: VideoCodec::H264,
            })
        );
        let rejected = offer(&VIDEO_H264.replace("m=video 9", "m=video 0"));
        assert_eq!(check_offer(&rejected, &cap()), Err(OfferError::NoVideo));
    }

    #[test]
    fn rejects_garbage_no_video_and_no_h264() {
        assert!(matches!(
            check_offer("hello", &cap()),
            Err(OfferError::Unparseable(_))
        ));
        let audio_only =
            offer("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n");
        assert_eq!(check_offer(&audio_only, &cap()), Err(OfferError::NoVideo));
        let sendonly = offer(&VIDEO_H264.replace("recvonly", "sendonly"));
        assert_eq!(check_offer(&sendonly, &cap()), Err(OfferError::NoVideo));
        let vp8 = offer(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n",
        );
        assert!(matches!(
            check_offer(&vp8, &cap()),
            Err(OfferError::NoCodec { .. })
        ));
        let mode0 = offer(&VIDEO_H264.replace("packetization-mode=1", "packetization-mode=0"));
        assert!(matches!(
            check_offer(&mode0, &cap()),
            Err(OfferError::NoCodec { .. })
        ));
        let high = offer(&VIDEO_H264.replace("42e01f", "640c1f"));
        assert!(matches!(
            check_offer(&high, &cap()),
            Err(OfferError::NoCodec { .. })
        ));
    }

    #[test]
    fn non_ascii_or_non_hex_profile_level_id_is_refused_without_panicking() {
        // `é` is two bytes, so byte 4 falls inside a character: slicing text there
        // panicked the session task before this check existed.
        for bad in [
            "abcéx",
            "42é01f",
            "42e0\u{1F600}",
            "zzzzzz",
            "42e01",
            "42e01f0",
            "",
        ] {
            let sdp = offer(&VIDEO_H264.replace("42e01f", bad));
            assert!(
                matches!(check_offer(&sdp, &cap()), Err(OfferError::NoCodec { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_offer_without_h264_gets_the_vp8_rung_if_the_camera_has_one() {
        // Firefox without its OpenH264 plugin offers VP8, VP9 and AV1 only.
        let firefox = offer(
            "m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125\r\na=mid:0\r\na=recvonly\r\n\
             a=rtpmap:120 VP8/90000\r\na=rtpmap:124 rtx/90000\r\na=fmtp:124 apt=120\r\n\
             a=rtpmap:121 VP9/90000\r\na=rtpmap:125 AV1/90000\r\n",
        );
        let with_vp8 = SendCapability { vp8: true, ..cap() };
        assert_eq!(
            check_offer(&firefox, &with_vp8).map(|i| i.video),
            Ok(VideoCodec::Vp8)
        );
        let refused = check_offer(&firefox, &cap()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "this browser offers no video codec the camera can send (the camera sends H.264 \
             with packetization-mode=1 and profile 42e01f; VP8 is off)"
        );
        // H.264 is preferred whenever it is usable: it is the full-size rung.
        assert_eq!(
            check_offer(&offer(VIDEO_H264), &with_vp8).map(|i| i.video),
            Ok(VideoCodec::H264)
        );
        // An unusable H.264 (another profile) beside VP8 gets VP8.
        let high = offer(&VIDEO_H264.replace("42e01f", "640c1f"));
        assert_eq!(
            check_offer(&high, &with_vp8).map(|i| i.video),
            Ok(VideoCodec::Vp8)
        );
        let vp9_only = offer(
            "m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=mid:0\r\na=recvonly\r\na=rtpmap:98 VP9/90000\r\n",
        );
        assert_eq!(
            check_offer(&vp9_only, &with_vp8).unwrap_err().to_string(),
            "this browser offers no video codec the camera can send (the camera sends H.264 \
             with packetization-mode=1 and profile 42e01f, or VP8)"
        );
    }

    #[test]
    fn level_may_differ_and_absent_direction_means_sendrecv() {
        let other_level = offer(
            &VIDEO_H264
                .replace("42e01f", "42e034")
                .replace("a=recvonly\r\n", ""),
        );
        assert!(check_offer(&other_level, &cap()).is_ok());
    }
}
