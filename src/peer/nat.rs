//! NAT 1:1 for a camera behind a known public address: webrtc-rs 0.21 stores its
//! `with_nat_1to1_ips` setting but never applies it, so edgecam rewrites the candidates
//! it trickles. Lines are read with the ICE agent's own candidate parser.

use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::{CandidateConfig, CandidateType, unmarshal_candidate};
use rtc::ice::tcp_type::TcpType;

/// For a local host candidate line (RFC 8839 §5.1) returns the lines to trickle
/// instead: with `as_srflx`, the original plus a server-reflexive twin on `public`
/// (`raddr`/`rport` = the host address, type preference 100, RFC 8445 §5.1.2.2, a
/// foundation of its own, §5.1.1.3); otherwise the line with its address replaced by
/// `public`. Lines of other types, active ICE-TCP ones (no listening port) and lines
/// the parser refuses pass unchanged. The ICE agent is unaffected: checks are matched
/// by ufrag, not by destination address.
pub fn nat_1to1_candidates(line: &str, public: &str, as_srflx: bool) -> Vec<String> {
    let raw = line.strip_prefix("candidate:").unwrap_or(line);
    let Ok(c) = unmarshal_candidate(raw) else {
        return vec![line.to_owned()];
    };
    if c.candidate_type() != CandidateType::Host || c.tcp_type() == TcpType::Active {
        return vec![line.to_owned()];
    }
    let network = c.network_type().network_short();
    let tcp_type = match c.tcp_type() {
        TcpType::Unspecified => String::new(),
        t => format!(" tcptype {t}"),
    };
    if !as_srflx {
        let moved = CandidateHostConfig {
            base_config: CandidateConfig {
                network,
                address: public.to_owned(),
                port: c.port(),
                component: c.component(),
                priority: c.priority(),
                foundation: c.foundation(),
                ..CandidateConfig::default()
            },
            tcp_type: c.tcp_type(),
        }
        .new_candidate_host();
        return match moved {
            Ok(m) => vec![format!("candidate:{}", m.marshal())],
            Err(_) => vec![line.to_owned()],
        };
    }
    let component = u32::from(c.component());
    let priority = (100u32 << 24) | (65_535 << 8) | (256 - component.min(256));
    // raddr/rport before the ICE-TCP extension, as RFC 8839 §5.1 and RFC 6544 §4.5
    // order them.
    let srflx = format!(
        "candidate:{}n {} {network} {priority} {public} {port} typ srflx raddr {} rport {port}{tcp_type}",
        c.foundation(),
        c.component(),
        c.address(),
        port = c.port(),
    );
    vec![line.to_owned(), srflx]
}

/// `lines` applied to every `a=candidate:` line of an SDP (RFC 8839 §5.1): each is
/// replaced by the `candidate:` lines `lines` returns for it (e.g.
/// [`nat_1to1_candidates`]), so that the candidates an answer carries are the ones the
/// camera trickles. Other lines, and the line endings (CRLF, RFC 8866 §5), are kept as
/// they are.
pub fn map_candidate_lines(sdp: &str, lines: impl Fn(&str) -> Vec<String>) -> String {
    let mut out = String::with_capacity(sdp.len() + 128);
    for line in sdp.split_inclusive('\n') {
        let Some(candidate) = line.strip_prefix("a=") else {
            out.push_str(line);
            continue;
        };
        if !candidate.starts_with("candidate:") {
            out.push_str(line);
            continue;
        }
        let body = candidate.trim_end_matches(['\r', '\n']);
        let eol = &candidate[body.len()..];
        for rewritten in lines(body) {
            out.push_str("a=");
            out.push_str(&rewritten);
            out.push_str(eol);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{map_candidate_lines, nat_1to1_candidates};

    fn nat_1to1_sdp(sdp: &str, public: &str, as_srflx: bool) -> String {
        map_candidate_lines(sdp, |l| nat_1to1_candidates(l, public, as_srflx))
    }

    #[test]
    fn nat_1to1_rewrites_the_candidate_lines_of_an_sdp_and_nothing_else() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
                   a=candidate:1234 1 udp 2130706431 192.168.1.20 50000 typ host\r\n\
                   a=candidate:7 1 udp 16777215 10.199.0.1 49152 typ relay raddr 192.168.1.20 rport 50000\r\n\
                   a=end-of-candidates\r\n";
        assert_eq!(
            nat_1to1_sdp(sdp, "198.51.100.7", false),
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
             a=candidate:1234 1 udp 2130706431 198.51.100.7 50000 typ host\r\n\
             a=candidate:7 1 udp 16777215 10.199.0.1 49152 typ relay raddr 192.168.1.20 rport 50000\r\n\
             a=end-of-candidates\r\n"
        );
        let twins = nat_1to1_sdp(sdp, "198.51.100.7", true);
        assert!(twins.contains(
            "a=candidate:1234 1 udp 2130706431 192.168.1.20 50000 typ host\r\n\
             a=candidate:1234n 1 udp 1694498815 198.51.100.7 50000 typ srflx raddr 192.168.1.20 rport 50000\r\n"
        ));
        // A last line without its line ending keeps none.
        assert_eq!(
            nat_1to1_sdp(
                "a=candidate:1 1 udp 1 192.168.1.20 5 typ host",
                "198.51.100.7",
                false
            ),
            "a=candidate:1 1 udp 1 198.51.100.7 5 typ host"
        );
    }

    #[test]
    fn nat_1to1_rewrites_host_candidates_only() {
        let host = "candidate:1234 1 udp 2130706431 192.168.1.20 50000 typ host";
        assert_eq!(
            nat_1to1_candidates(host, "198.51.100.7", false),
            ["candidate:1234 1 udp 2130706431 198.51.100.7 50000 typ host"]
        );
        let both = nat_1to1_candidates(host, "198.51.100.7", true);
        assert_eq!(both[0], host);
        assert_eq!(
            both[1],
            "candidate:1234n 1 udp 1694498815 198.51.100.7 50000 typ srflx raddr 192.168.1.20 rport 50000"
        );
        let passive = "candidate:9 1 tcp 1671430143 192.168.1.20 50000 typ host tcptype passive";
        assert!(nat_1to1_candidates(passive, "198.51.100.7", true)[1].ends_with("tcptype passive"));
        assert_eq!(
            nat_1to1_candidates(passive, "198.51.100.7", false),
            ["candidate:9 1 tcp 1671430143 198.51.100.7 50000 typ host tcptype passive"]
        );
        for other in [
            "candidate:9 1 tcp 1671430143 192.168.1.20 9 typ host tcptype active",
            "candidate:3 1 udp 16777215 10.0.0.1 40000 typ relay raddr 192.168.1.20 rport 50000",
            "garbage",
            "candidate:1 1 udp 1 192.168.1.20 notaport typ host",
        ] {
            assert_eq!(nat_1to1_candidates(other, "198.51.100.7", true), [other]);
        }
    }
}
