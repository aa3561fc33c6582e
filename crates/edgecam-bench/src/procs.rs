//! The processes a benchmark run starts (Mosquitto, edgecam, the load process) and what
//! it reads about them from `/proc`.

use anyhow::Context as _;
use serde_json::Value;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts TCP connections, at most `limit`.
pub fn wait_port(addr: (&str, u16), limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` (all its threads) in clock ticks (proc(5), fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; count fields after its ")".
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process stopped with SIGTERM (then SIGKILL after 3 s) when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Takes ownership of a spawned child.
    pub fn new(child: Child) -> Self {
        Self { child }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash: nothing is closed cleanly.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// `ip netns exec <ns>` in front of `program` when `netns` is given.
fn command(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Starts `mosquitto` with an MQTT listener on `port` and a WebSocket listener on
/// `ws_port`, bound to `bind`, inside `netns` if given; waits until it listens.
///
/// # Errors
/// When mosquitto cannot be started or does not listen within 10 s.
pub fn mosquitto(
    dir: &Path,
    netns: Option<&str>,
    bind: &str,
    port: u16,
    ws_port: u16,
) -> anyhow::Result<Proc> {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\nlistener {port} {bind}\n\
             listener {ws_port} {bind}\nprotocol websockets\nlog_dest stderr\nlog_type error\n"
        ),
    )?;
    let child = command(netns, Path::new("mosquitto"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("mosquitto (Debian package mosquitto): {e}"))?;
    let proc = Proc { child };
    if netns.is_none() {
        anyhow::ensure!(
            wait_port(("127.0.0.1", port), Duration::from_secs(10)),
            "mosquitto did not listen on {port}"
        );
    } else {
        // Not reachable from this namespace: give it the moment it needs to bind.
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(proc)
}

/// A running edgecam and the socket it sends its systemd notifications to.
pub struct Edgecam {
    /// The process.
    pub proc: Proc,
    /// When it was spawned.
    pub spawned: Instant,
    /// Its stderr log.
    pub log: PathBuf,
    notify: UnixDatagram,
}

impl Edgecam {
    /// Spawns `binary --config <dir>/<name>.toml` (inside `netns` if given) with
    /// `NOTIFY_SOCKET` pointing at a datagram socket of ours, so `READY=1` can be timed
    /// the way systemd sees it.
    ///
    /// # Errors
    /// When the config or socket cannot be written or the binary not started.
    pub fn spawn(
        binary: &Path,
        dir: &Path,
        name: &str,
        config: &str,
        netns: Option<&str>,
        rust_log: &str,
    ) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let sock = dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock)?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let log = dir.join(format!("{name}.log"));
        let spawned = Instant::now();
        let child = command(netns, binary)
            .arg("--config")
            .arg(&path)
            .env("NOTIFY_SOCKET", &sock)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: {e}", binary.display()))?;
        Ok(Self {
            proc: Proc { child },
            spawned,
            log,
            notify,
        })
    }

    /// Waits (at most `limit`) for `READY=1`; returns the time since spawning.
    ///
    /// # Errors
    /// When edgecam exits or `READY=1` does not come in time.
    pub fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let mut buf = [0u8; 4096];
        while self.spawned.elapsed() < limit {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let at = self.spawned.elapsed();
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    return Ok(at);
                }
            }
            anyhow::ensure!(
                self.proc.alive(),
                "edgecam exited; log: {}",
                self.log_tail()
            );
        }
        anyhow::bail!("no READY=1 within {limit:?}; log: {}", self.log_tail())
    }

    /// The last 2000 bytes of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or(&text).to_owned()
    }
}

/// edgecam's `/api/stats` document from `127.0.0.1:port`: one HTTP/1.0 GET on a
/// `TcpStream` (a single loopback request needs no HTTP client).
///
/// # Errors
/// When the server does not answer with a JSON body within 5 s.
pub fn stats(port: u16) -> anyhow::Result<serde_json::Value> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /api/stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(serde_json::from_str(body)?)
}

/// The load process and its JSON lines.
pub struct LoadProc {
    /// The process.
    pub proc: Proc,
    lines: mpsc::Receiver<Value>,
    stdin: std::process::ChildStdin,
}

impl LoadProc {
    /// Starts `edgecam-bench load --broker-port <broker_port> <extra…>` (this binary).
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn spawn(broker_port: u16, extra: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["load", "--broker-port", &broker_port.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("load stdout")?;
        let stdin = child.stdin.take().context("load stdin")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Ok(Self {
            proc: Proc::new(child),
            lines,
            stdin,
        })
    }

    /// The next line of kind `event`, at most `limit` away.
    ///
    /// # Errors
    /// When none comes in time.
    pub fn next(&self, event: &str, limit: Duration) -> anyhow::Result<Value> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow::anyhow!("load process: no {event} line within {limit:?}"))?;
            if v["event"] == event {
                return Ok(v);
            }
        }
    }

    /// Asks for a `snapshot` line and returns it.
    ///
    /// # Errors
    /// When the process does not answer within 10 s.
    pub fn snapshot(&mut self) -> anyhow::Result<Value> {
        writeln!(self.stdin, "snapshot")?;
        self.next("snapshot", Duration::from_secs(10))
    }

    /// Says `quit` (every viewer leaves with `bye`) and waits up to 10 s for the exit.
    pub fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let end = Instant::now() + Duration::from_secs(10);
        while self.proc.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
