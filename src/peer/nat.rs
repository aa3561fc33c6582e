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

#[cfg(test)]
mod tests {
    use super::nat_1to1_candidates;

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
