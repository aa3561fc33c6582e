//! Network namespaces the test creates itself: a "camera" and a "viewer" namespace
//! joined by a veth pair (10.199.N.1/30 ↔ 10.199.N.2/30), loopback up in both, no
//! default route anywhere, so nothing a test starts inside can reach past them.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Runs `ip args…`; its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `program args…`; its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// (Re)creates namespace `ns` with loopback up.
pub fn fresh_netns(ns: &str) -> Result<(), String> {
    let _ = ip(&["netns", "del", ns]);
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// A veth link between two namespaces: each end `(namespace, device, address/prefix)`
/// is addressed and up.
pub fn veth(a: (&str, &str, &str), b: (&str, &str, &str)) -> Result<(), String> {
    ip(&[
        "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
    ])?;
    for (ns, dev, cidr) in [a, b] {
        ip(&["-n", ns, "addr", "add", cidr, "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    Ok(())
}

/// Two namespaces and the link between them; deleted on drop.
pub struct NetPair {
    /// Camera namespace name.
    pub camera: String,
    /// Viewer namespace name.
    pub viewer: String,
    /// Camera's address on the link.
    pub camera_ip: String,
    /// Viewer's address on the link.
    pub viewer_ip: String,
    /// The camera's end of the link (its interface inside `camera`).
    pub camera_if: String,
    /// The delaying bridge and its namespace, for a pair made by
    /// [`NetPair::with_delay`].
    bridge: Option<(crate::delay::DelayBridge, String)>,
}

impl NetPair {
    /// Creates the pair. Needs root (CAP_NET_ADMIN).
    pub fn new() -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let camera = format!("ec{pid}c{n}");
        let viewer = format!("ec{pid}v{n}");
        let subnet = (pid + n) % 250 + 1;
        let (ca, cb) = (format!("ec{pid}a{n}"), format!("ec{pid}b{n}"));
        let camera_ip = format!("10.199.{subnet}.1");
        let viewer_ip = format!("10.199.{subnet}.2");
        for ns in [&camera, &viewer] {
            fresh_netns(ns)?;
        }
        veth(
            (&camera, &ca, &format!("{camera_ip}/30")),
            (&viewer, &cb, &format!("{viewer_ip}/30")),
        )?;
        let pair = Self {
            camera,
            viewer,
            camera_ip,
            viewer_ip,
            camera_if: ca,
            bridge: None,
        };
        Ok(pair)
    }

    /// As [`NetPair::new`], with a middle namespace between the two whose bridge
    /// ([`crate::delay::DelayBridge`]) holds each frame `one_way` in each direction: a
    /// round-trip time of twice that. Camera and viewer share one subnet as before.
    pub fn with_delay(one_way: std::time::Duration) -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let camera = format!("ec{pid}c{n}");
        let viewer = format!("ec{pid}v{n}");
        let mid = format!("ec{pid}m{n}");
        let subnet = (pid + n) % 250 + 1;
        let camera_ip = format!("10.199.{subnet}.1");
        let viewer_ip = format!("10.199.{subnet}.2");
        let (ca, ma) = (format!("ec{pid}a{n}"), format!("ec{pid}p{n}"));
        let (mb, vb) = (format!("ec{pid}q{n}"), format!("ec{pid}b{n}"));
        for ns in [&camera, &viewer, &mid] {
            fresh_netns(ns)?;
            // No IPv6: its link-local addresses turn valid a second or more after the
            // link comes up (duplicate address detection, through the bridge's delay),
            // and Chromium aborts its page loads on that change (ERR_NETWORK_CHANGED:
            // seen once in CI, the page's scripts never loaded).
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
                     echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
                ],
            )?;
        }
        for ((ns, dev, cidr), (peer_ns, peer)) in [
            ((&camera, &ca, format!("{camera_ip}/30")), (&mid, &ma)),
            ((&viewer, &vb, format!("{viewer_ip}/30")), (&mid, &mb)),
        ] {
            ip(&[
                "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", peer, "netns",
                peer_ns,
            ])?;
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", peer_ns, "link", "set", peer, "up"])?;
        }
        let bridge = crate::delay::DelayBridge::start(&mid, &ma, &mb, one_way)?;
        Ok(Self {
            camera,
            viewer,
            camera_ip,
            viewer_ip,
            camera_if: ca,
            bridge: Some((bridge, mid)),
        })
    }

    /// A second viewer namespace on its own veth link to the camera (10.198.200+N.0/30
    /// range is the host link's; this uses 10.197.N.0/30), so the two viewers' links
    /// can be shaped apart. Returns it with the camera's address on that link; it is
    /// deleted on drop.
    pub fn second_viewer(&self) -> Result<SecondViewer, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let ns = format!("ec{pid}w{n}");
        let (ca, cb) = (format!("ec{pid}d{n}"), format!("ec{pid}e{n}"));
        let subnet = (pid + n) % 250 + 1;
        let camera_ip = format!("10.197.{subnet}.1");
        let viewer_ip = format!("10.197.{subnet}.2");
        fresh_netns(&ns)?;
        veth(
            (&self.camera, &ca, &format!("{camera_ip}/30")),
            (&ns, &cb, &format!("{viewer_ip}/30")),
        )?;
        Ok(SecondViewer {
            viewer: ns,
            camera_ip,
            camera_if: ca,
            camera_ns: self.camera.clone(),
        })
    }

    /// Limits the camera → viewer direction to `kbit` kbit/s with a token bucket
    /// (`tc qdisc … tbf`: 15 KB burst, packets waiting more than 100 ms are dropped, as
    /// a congested uplink's buffer does); `None` removes the limit.
    pub fn shape(&self, kbit: Option<u32>) -> Result<(), String> {
        match kbit {
            Some(k) => tbf(&self.camera, &self.camera_if, k),
            None => {
                // Nothing to remove unless a limit was set.
                let _ = run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &self.camera,
                        "tc",
                        "qdisc",
                        "del",
                        "dev",
                        &self.camera_if,
                        "root",
                    ],
                );
                Ok(())
            }
        }
    }

    /// Drops `percent` % of the camera's outgoing UDP at random (nftables `numgen
    /// random`; there is no `sch_netem` here); 0 removes the rule.
    pub fn drop_udp(&self, percent: u32) -> Result<(), String> {
        let ns = &self.camera;
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "inet",
                "edgecam_loss",
            ],
        );
        if percent == 0 {
            return Ok(());
        }
        let rules = format!(
            "table inet edgecam_loss {{ chain out {{ type filter hook output priority 0; \
             meta l4proto udp numgen random mod 100 < {percent} drop; }}; }}"
        );
        run("ip", &["netns", "exec", ns, "nft", &rules])
    }

    /// Drops the first datagram the camera sends whose DTLS record is a handshake
    /// message of `handshake_type` (content type 22 in byte 0 of the record header,
    /// RFC 6347 §4.1; the handshake type in byte 13, RFC 5246 §7.4), e.g. 2, the
    /// ServerHello that opens the camera's flight 4 as the DTLS server; the ones after
    /// it pass (nftables `limit rate 1/hour burst 1 packets`, which matches once).
    pub fn drop_first_dtls_handshake(&self, handshake_type: u8) -> Result<(), String> {
        let rules = format!(
            "table inet edgecam_dtls {{ chain out {{ type filter hook output priority 0; \
             meta l4proto udp @th,64,8 0x16 @th,168,8 {handshake_type} \
             limit rate 1/hour burst 1 packets counter drop; }}; }}"
        );
        run("ip", &["netns", "exec", &self.camera, "nft", &rules])
    }

    /// How many datagrams [`NetPair::drop_first_dtls_handshake`] dropped (its rule's
    /// counter).
    pub fn dtls_dropped(&self) -> Result<u64, String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.camera,
                "nft",
                "list",
                "table",
                "inet",
            ])
            .arg("edgecam_dtls")
            .output()
            .map_err(|e| format!("nft: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // `… burst 1 packets counter packets N bytes M drop`
        text.split_whitespace()
            .skip_while(|w| *w != "counter")
            .nth(2)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no counter in: {text}"))
    }

    /// `ip netns exec <ns>` as a command prefix.
    pub fn exec(ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.into()]
    }
}

/// Limits egress of `dev` in namespace `ns` to `kbit` kbit/s: `tc … tbf` with a 15 KB
/// burst, packets waiting more than 100 ms dropped (a congested uplink's buffer).
fn tbf(ns: &str, dev: &str, kbit: u32) -> Result<(), String> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{kbit}kbit"),
            "burst",
            "15k",
            "latency",
            "100ms",
        ],
    )
}

/// A second viewer namespace linked to a [`NetPair`]'s camera (see
/// [`NetPair::second_viewer`]); deleted on drop.
pub struct SecondViewer {
    /// Its namespace.
    pub viewer: String,
    /// The camera's address on this link.
    pub camera_ip: String,
    /// The camera's end of this link.
    pub camera_if: String,
    camera_ns: String,
}

impl SecondViewer {
    /// Limits the camera → this viewer direction to `kbit` kbit/s (as
    /// [`NetPair::shape`]).
    pub fn shape(&self, kbit: u32) -> Result<(), String> {
        tbf(&self.camera_ns, &self.camera_if, kbit)
    }
}

impl Drop for SecondViewer {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.viewer]);
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth and with it the pair.
        let _ = ip(&["netns", "del", &self.camera]);
        let _ = ip(&["netns", "del", &self.viewer]);
        if let Some((bridge, mid)) = self.bridge.take() {
            drop(bridge);
            let _ = ip(&["netns", "del", &mid]);
        }
    }
}

/// A namespace joined to the host's (root) namespace by a veth pair
/// (10.198.N.1/30 on the host ↔ 10.198.N.2/30 inside), loopback up, no default route:
/// what runs inside reaches the host's end and nothing else. Deleted on drop.
pub struct HostLink {
    /// Namespace name.
    pub ns: String,
    /// The host's address on the link.
    pub host_ip: String,
    /// The namespace's address on the link.
    pub ns_ip: String,
    /// The namespace's end of the veth pair.
    pub ns_dev: String,
}

impl HostLink {
    /// Creates the namespace and the link. Needs root (CAP_NET_ADMIN).
    pub fn new() -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let ns = format!("ec{pid}h{n}");
        let (host_dev, ns_dev) = (format!("ec{pid}x{n}"), format!("ec{pid}y{n}"));
        let subnet = (pid + n) % 250 + 1;
        let (host_ip, ns_ip) = (format!("10.198.{subnet}.1"), format!("10.198.{subnet}.2"));
        fresh_netns(&ns)?;
        let link = Self {
            ns,
            host_ip,
            ns_ip,
            ns_dev,
        };
        ip(&[
            "link",
            "add",
            &host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &link.ns_dev,
            "netns",
            &link.ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", link.host_ip),
            "dev",
            &host_dev,
        ])?;
        ip(&["link", "set", &host_dev, "up"])?;
        ip(&[
            "-n",
            &link.ns,
            "addr",
            "add",
            &format!("{}/30", link.ns_ip),
            "dev",
            &link.ns_dev,
        ])?;
        link.set_up(true)?;
        Ok(link)
    }

    /// Takes the namespace's end of the link down (as a Wi-Fi drop or an unplugged
    /// cable: its address stays, its route goes) or up again.
    pub fn set_up(&self, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns, "link", "set", &self.ns_dev, state])
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the veth and with it the pair.
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
