//! A small internet in network namespaces the test creates itself: a camera network and
//! a viewer network, each joined to a "relay" namespace that routes between them and
//! hosts the public services (coturn, Mosquitto). nftables in the relay namespace drops
//! everything forwarded between camera and viewer, so the only way media can flow is
//! through TURN — the situation of a camera and a viewer behind NATs that will not
//! let a direct path through. Nothing here has a route off the machine.
//!
//! ```text
//!  camera ns 10.198.S.2/30 ── 10.198.S.1 relay ns 10.198.S.9 ── 10.198.S.10/29 viewer ns
//!                              (coturn, Mosquitto; forward camera↔viewer: drop)
//! ```

use super::netns::{fresh_netns, ip, run, veth};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Runs `nft -f -` with `rules` inside namespace `ns`.
fn nft(ns: &str, rules: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Camera, viewer and relay namespaces; deleted on drop.
pub struct RelayNet {
    /// Camera namespace.
    pub camera: String,
    /// Viewer namespace.
    pub viewer: String,
    /// Relay namespace (coturn, Mosquitto, the router).
    pub relay: String,
    /// Camera's address.
    pub camera_ip: String,
    /// Viewer's address (changes with [`RelayNet::move_viewer`]).
    pub viewer_ip: String,
    /// The relay's address on the camera side: where coturn and Mosquitto listen
    /// (reachable from the viewer too, as a local address of the relay).
    pub relay_ip: String,
    viewer_dev: String,
    subnet: u32,
}

impl RelayNet {
    /// Creates the three namespaces, their links and routes, and the forward-drop rule.
    /// Needs root (CAP_NET_ADMIN).
    pub fn new() -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 100_000;
        let subnet = (pid + n * 7) % 250 + 1;
        let name = |k: &str| format!("en{pid}{k}{n}");
        let net = Self {
            camera: name("c"),
            viewer: name("v"),
            relay: name("r"),
            camera_ip: format!("10.198.{subnet}.2"),
            viewer_ip: format!("10.198.{subnet}.10"),
            relay_ip: format!("10.198.{subnet}.1"),
            viewer_dev: name("vv"),
            subnet,
        };
        for ns in [&net.camera, &net.viewer, &net.relay] {
            fresh_netns(ns)?;
        }
        let relay_v = format!("10.198.{subnet}.9");
        veth(
            (&net.camera, &name("cr"), &format!("{}/30", net.camera_ip)),
            (&net.relay, &name("rc"), &format!("{}/30", net.relay_ip)),
        )?;
        veth(
            (
                &net.viewer,
                &net.viewer_dev,
                &format!("{}/29", net.viewer_ip),
            ),
            (&net.relay, &name("rv"), &format!("{relay_v}/29")),
        )?;
        ip(&[
            "-n",
            &net.camera,
            "route",
            "add",
            "default",
            "via",
            &net.relay_ip,
        ])?;
        ip(&[
            "-n",
            &net.viewer,
            "route",
            "add",
            "default",
            "via",
            &relay_v,
        ])?;
        ip(&[
            "netns",
            "exec",
            &net.relay,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        // The relay routes, but drops whatever camera and viewer send each other: no
        // direct path exists, as between two strict NATs.
        nft(
            &net.relay,
            "table inet edgecam {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n }\n \
             chain input {\n  type filter hook input priority 0; policy accept;\n }\n}\n",
        )?;
        Ok(net)
    }

    /// Lets camera and viewer reach each other directly (forwarding accepted), so a
    /// relay is used only where a policy demands it.
    pub fn allow_direct(&self) -> Result<(), String> {
        nft(&self.relay, "add rule inet edgecam forward accept\n")
    }

    /// Drops every UDP datagram the viewer sends, to the relay or anywhere: only TCP
    /// (TURN over TCP or TLS, MQTT over WebSocket) gets out.
    pub fn block_viewer_udp(&self) -> Result<(), String> {
        let viewer_net = format!("10.198.{}.8/29", self.subnet);
        nft(
            &self.relay,
            &format!(
                "insert rule inet edgecam input ip saddr {viewer_net} meta l4proto udp drop\n\
                 insert rule inet edgecam forward ip saddr {viewer_net} meta l4proto udp drop\n"
            ),
        )
    }

    /// Gives the viewer a new address (as after a Wi-Fi → mobile handover) and removes
    /// the old one, so packets to the old address go nowhere.
    pub fn move_viewer(&mut self) -> Result<(), String> {
        let new_ip = format!("10.198.{}.11", self.subnet);
        let dev = self.viewer_dev.clone();
        // Old address out first: deleting a primary address would take secondaries
        // (the new one) and the routes through them with it.
        ip(&[
            "-n",
            &self.viewer,
            "addr",
            "del",
            &format!("{}/29", self.viewer_ip),
            "dev",
            &dev,
        ])?;
        ip(&[
            "-n",
            &self.viewer,
            "addr",
            "add",
            &format!("{new_ip}/29"),
            "dev",
            &dev,
        ])?;
        ip(&[
            "-n",
            &self.viewer,
            "route",
            "replace",
            "default",
            "via",
            &format!("10.198.{}.9", self.subnet),
        ])?;
        self.viewer_ip = new_ip;
        Ok(())
    }
}

impl Drop for RelayNet {
    fn drop(&mut self) {
        for ns in [&self.camera, &self.viewer, &self.relay] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// How a test coturn authenticates.
pub struct CoturnOptions<'a> {
    /// TURN REST shared secret (`use-auth-secret`).
    pub secret: &'a str,
    /// Start a TLS listener on 5349 with this certificate and key (PEM files).
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Run coturn with its clock this far in the future (libfaketime), so credentials
    /// minted now look expired to it.
    pub clock_ahead: Option<Duration>,
}

/// Debian's coturn (`turnserver`) inside a namespace, UDP+TCP on 3478 (+ TLS on 5349).
pub struct Coturn {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts coturn in `ns` listening and relaying on `ip`; waits until it listens.
    pub fn start_in(ns: &str, ip: &str, opts: &CoturnOptions<'_>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("turn.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(ahead) = opts.clock_ahead {
            cmd.args(["faketime", "-f", &format!("+{}s", ahead.as_secs())]);
        }
        cmd.arg("turnserver")
            .args(["-n", "--no-cli", "--no-dtls", "--fingerprint"])
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--relay-ip={ip}"))
            .args(["--listening-port=3478", "--tls-listening-port=5349"])
            .args(["--min-port=40000", "--max-port=40999"])
            .args(["--realm=edgecam.test", "--use-auth-secret"])
            .arg(format!("--static-auth-secret={}", opts.secret))
            // Test networks are private ranges; coturn must relay to them.
            .arg("--allowed-peer-ip=10.198.0.0-10.198.255.255")
            .arg(format!(
                "--pidfile={}",
                dir.path().join("turn.pid").display()
            ))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .arg(format!("--log-file={}", log.display()))
            .args(["--simple-log", "--verbose"]);
        match opts.tls {
            Some((cert, key)) => {
                cmd.arg(format!("--cert={}", cert.display()))
                    .arg(format!("--pkey={}", key.display()));
            }
            None => {
                cmd.arg("--no-tls");
            }
        }
        // A process group of its own: `faketime` runs turnserver as its child, so
        // killing the direct child alone left turnserver running (orphaned).
        let child = cmd
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn is installed (Debian package coturn)");
        let turn = Self {
            child,
            log,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-Hltn", "sport = :3478"])
                .output()
                .expect("ss (iproute2)");
            if !out.stdout.is_empty() {
                return turn;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("coturn did not listen on 3478:\n{}", turn.log_text());
    }

    /// coturn's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        // The whole group: `ip netns exec`, `faketime` and turnserver.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `ip` (subjectAltName IP), made with `openssl`:
/// `(cert.pem, key.pem)` in `dir`.
pub fn self_signed_cert(dir: &Path, ip: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join("turn-cert.pem");
    let key = dir.join("turn-key.pem");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=turn.edgecam.test",
            "-addext",
            &format!("subjectAltName=IP:{ip},DNS:turn.edgecam.test"),
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            cert.to_str().expect("utf-8 path"),
        ],
    )
    .expect("openssl makes a certificate");
    (cert, key)
}
