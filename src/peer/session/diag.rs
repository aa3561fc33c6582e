//! What a session tells the operator about its network path: the local candidates
//! it gathered, by type, and the candidate pair media flows over.

use rtc::ice::candidate::{CandidateType, unmarshal_candidate};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use webrtc::peer_connection::PeerConnection;

/// Local candidates gathered for the current ICE generation, by type (RFC 8445 §5.1.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gathered {
    pub host: u32,
    pub srflx: u32,
    pub relay: u32,
    pub tcp: u32,
}

impl Gathered {
    /// Counts one local candidate line (RFC 8839 §5.1), parsed with the ICE agent's
    /// own parser so that what is counted is what the agent will use; a line it cannot
    /// parse is not counted.
    pub(super) fn count(&mut self, line: &str) {
        let raw = line.strip_prefix("candidate:").unwrap_or(line);
        let Ok(c) = unmarshal_candidate(raw) else {
            return;
        };
        if c.network_type().is_tcp() {
            self.tcp += 1;
        }
        match c.candidate_type() {
            CandidateType::Host => self.host += 1,
            CandidateType::ServerReflexive => self.srflx += 1,
            CandidateType::Relay => self.relay += 1,
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
pub(super) async fn selected_pair(
    pc: &Arc<dyn PeerConnection>,
) -> Option<(String, Option<(IpAddr, u16)>)> {
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
    let mut remote_type = remote
        .as_ref()
        .map_or_else(|| "?".to_owned(), |c| c.candidate_type.to_string());
    let mut remote_addr = remote.and_then(|c| Some((c.address.as_deref()?.parse().ok()?, c.port)));
    if remote_addr.is_none()
        && let Some(selected) = ice_selected_remote(pc).await
    {
        // A peer-reflexive remote (learnt from a connectivity check, RFC 8445 §7.3.1.3)
        // is only known to the ICE transport.
        remote_type = selected.typ.to_string();
        remote_addr = selected.address.parse().ok().map(|ip| (ip, selected.port));
    }
    let pair = format!("{}/{remote_type} {}", local.candidate_type, local.protocol).to_lowercase();
    Some((pair, remote_addr))
}

/// The remote candidate of the ICE transport's selected pair (the bundled transport
/// of the first transceiver that has one).
async fn ice_selected_remote(
    pc: &Arc<dyn PeerConnection>,
) -> Option<rtc::peer_connection::transport::RTCIceCandidate> {
    for t in pc.get_transceivers().await {
        let Some(sender) = t.sender().await.ok().flatten() else {
            continue;
        };
        let Some(dtls) = sender.transport().await.ok().flatten() else {
            continue;
        };
        if let Ok(Some(pair)) = dtls.ice_transport().get_selected_candidate_pair().await {
            return Some(pair.remote().clone());
        }
    }
    None
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
