//! Real parts for integration tests: a Mosquitto broker and the edgecam binary started
//! on ephemeral loopback ports, and a webrtc-rs test viewer that speaks the signaling
//! contract and decodes what it receives with real GStreamer decoders.
#![allow(dead_code)]

pub mod browser;
pub mod nat;
pub mod viewer;

pub use edgecam_testkit::netns;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released), chosen below the kernel's
/// ephemeral range (`ip_local_port_range`, 32768–60999 by default) and never handed
/// out twice by this process.
///
/// Why not port 0: the kernel gives the same range to outgoing connections, so between
/// releasing the port and a broker binding it, any client socket of a test running
/// beside (a flood test opens thousands) could take it, and the broker fails to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_700);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000..32700 after 1000 tries");
}

/// A count from a talk-back turn's log line, the number right after `label`: in
/// `talk-back: floor released; 201 packets played, 0 dropped, over 4391 ms; jitter
/// buffer: 108 pushed, 0 lost, 0 late`, `"released; "` gives the packets played and
/// `"jitter buffer: "` the packets the jitter buffer passed on. `None` when `label` is
/// missing or no number follows it.
pub fn turn_count(line: &str, label: &str) -> Option<u64> {
    line.split(label).nth(1)?.split(' ').next()?.parse().ok()
}

/// Waits until `port` on 127.0.0.1 accepts connections, at most `limit`.
pub fn wait_port(port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    // SIGTERM first (graceful), then SIGKILL after `grace`.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok();
    None
}

/// A Mosquitto broker on an ephemeral loopback port (plus a WebSocket listener).
pub struct Mosquitto {
    child: Child,
    killed: bool,
    /// MQTT over TCP port.
    pub port: u16,
    /// MQTT over WebSocket port.
    pub ws_port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` on ephemeral loopback ports and waits until it listens.
    pub fn start() -> Self {
        Self::start_fresh("allow_anonymous true\n", None)
    }

    /// As [`Mosquitto::start`], refusing anonymous clients: logins from `password_file`
    /// (made with `mosquitto_passwd`), topics limited by `acl_file`.
    pub fn start_locked(password_file: &std::path::Path, acl_file: &std::path::Path) -> Self {
        let auth = format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            password_file.display(),
            acl_file.display()
        );
        Self::start_fresh(&auth, None)
    }

    /// Starts `mosquitto` on the given loopback ports (to restart a broker in place).
    pub fn start_on(port: u16, ws_port: u16) -> Self {
        Self::start_with(None, port, ws_port, "127.0.0.1", "allow_anonymous true\n")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Mosquitto::start`], also listening (MQTT over TCP, same port) on `also`, an
    /// address of a link to a namespace the test created.
    pub fn start_also_on(also: &str) -> Self {
        Self::start_fresh("allow_anonymous true\n", Some(also))
    }

    /// Starts `mosquitto` inside namespace `netns` on all of its addresses (the namespace
    /// is private to the test, so fixed ports cannot collide).
    pub fn start_in(netns: &str, port: u16, ws_port: u16) -> Self {
        Self::start_with(
            Some(netns),
            port,
            ws_port,
            "0.0.0.0",
            "allow_anonymous true\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// On fresh ports, up to three tries: a port can still be taken between choosing it
    /// and the broker binding it, and then the broker exits.
    fn start_fresh(auth: &str, also: Option<&str>) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let auth = match also {
                Some(addr) => format!("{auth}listener {port} {addr}\n"),
                None => auth.to_string(),
            };
            match Self::start_with(None, port, free_port(), "127.0.0.1", &auth) {
                Ok(broker) => return broker,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn start_with(
        netns: Option<&str>,
        port: u16,
        ws_port: u16,
        bind: &str,
        auth: &str,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\n{auth}listener {port} {bind}\n\
                 listener {ws_port} {bind}\nprotocol websockets\nlog_dest stderr\nlog_type error\n\
                 log_type warning\nmessage_size_limit 0\n"
            ),
        )
        .expect("write mosquitto.conf");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "mosquitto"]);
                c
            }
            None => Command::new("mosquitto"),
        };
        let mut child = cmd
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (Debian package mosquitto)");
        if netns.is_none() {
            if !(wait_port(port, Duration::from_secs(10))
                && wait_port(ws_port, Duration::from_secs(10)))
            {
                terminate(&mut child, Duration::from_secs(2));
                return Err(format!("mosquitto did not listen on {port} and {ws_port}"));
            }
        } else {
            // Not reachable from here: give it the moment it needs to bind.
            std::thread::sleep(Duration::from_millis(300));
        }
        // A listener that failed to bind makes mosquitto exit after the others bound, and
        // something else may hold the port it failed on.
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "mosquitto on {port}/{ws_port} exited at start ({status}): a port was taken"
            ));
        }
        Ok(Self {
            child,
            killed: false,
            port,
            ws_port,
            _dir: dir,
        })
    }
}

impl Mosquitto {
    /// Kills the broker with SIGKILL: no clean disconnect, its retained messages gone
    /// (no persistence), as when it crashes or its machine loses power.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// The edgecam binary, run with a config the test writes.
pub struct Edgecam {
    child: Option<Child>,
    /// Its log (stderr).
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

/// A config for a test camera `id` using `broker_port`: test sources, loopback ICE,
/// no HTTP server, and access mode `open` (protocol 1 as the contract has it; invite
/// mode has its own tests in `tests/access.rs` and the browser and lab tests).
pub fn camera_config(id: &str, broker_port: u16, extra: &str) -> String {
    format!(
        "[camera]\nid = \"{id}\"\n[video]\nsource = \"test\"\nwidth = 640\nheight = 360\nfps = 30\nbitrate_kbps = 800\n\
         [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:{broker_port}\"\n\
         [http]\nenabled = false\n[access]\nmode = \"open\"\n[webrtc]\nudp_bind = [\"127.0.0.1\"]\n{extra}"
    )
}

impl Edgecam {
    /// Starts `edgecam --config <file>` with `config` as the file's text.
    pub fn start(config: &str) -> Self {
        Self::start_in(None, Some(config))
    }

    /// Starts edgecam inside network namespace `netns` (if given), with `config` as its
    /// config file, or with no config at all (the built-in standalone defaults).
    pub fn start_in(netns: Option<&str>, config: Option<&str>) -> Self {
        Self::start_env(netns, config, &[])
    }

    /// As [`Edgecam::start_in`], with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_env(netns: Option<&str>, config: Option<&str>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("edgecam.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_edgecam")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_edgecam")),
        };
        if let Some(config) = config {
            let path = dir.path().join("edgecam.toml");
            std::fs::write(&path, config).expect("write config");
            cmd.arg("--config").arg(&path);
        }
        // Invite mode's generated secret goes here, not into the machine's state.
        cmd.env("STATE_DIRECTORY", dir.path().join("state"));
        cmd.envs(env.iter().copied());
        // EDGECAM_TEST_LOG: another filter for the camera's log (e.g. with `rtc_dtls=debug`).
        let filter = std::env::var("EDGECAM_TEST_LOG")
            .unwrap_or_else(|_| "warn,rumqttd=off,edgecam=debug".into());
        let child = cmd
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn edgecam");
        Self {
            child: Some(child),
            log,
            dir,
        }
    }

    /// Its state directory (`STATE_DIRECTORY`): invite mode's generated secret.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `grace`) for a graceful exit.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.child.take().and_then(|mut c| terminate(&mut c, grace))
    }

    /// Waits at most `limit` for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: an unclean death, for the Last Will.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replaces the config file's text (for a SIGHUP reload).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("edgecam.toml"), config).expect("write config");
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hangup(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg("-HUP")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Edgecam {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if std::thread::panicking() {
            let mut err = std::io::stderr();
            let _ = writeln!(err, "---- edgecam log ----\n{}", self.log_text());
        }
    }
}
