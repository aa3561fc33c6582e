//! Raspberry Pi builds: the arm64 and armhf release binaries built with the no-Docker
//! recipe (`cross/build.sh`: Debian bookworm sysroot, Debian cross gcc), run under
//! qemu-user against that sysroot's glibc 2.36 and GStreamer 1.22; their .debs checked,
//! and the arm64 one installed with `dpkg -i` into an arm64 Debian root.
//!
//! `scripts/test.sh` builds the artifacts in the background at idle CPU priority while
//! the rest of the suite runs, and runs these tests after it (`raspberry_pi::`); run
//! alone, this test builds them itself (`cross/package.sh` waits for a packaging that
//! is already under way).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// A Raspberry Pi target and how to look at its binaries.
struct Target {
    /// Rust target triple.
    triple: &'static str,
    /// Debian architecture.
    arch: &'static str,
    /// binutils' `readelf` for it.
    readelf: &'static str,
    /// What `readelf -h` calls the machine.
    machine: &'static str,
}

const ARM64: Target = Target {
    triple: "aarch64-unknown-linux-gnu",
    arch: "arm64",
    readelf: "aarch64-linux-gnu-readelf",
    machine: "AArch64",
};
const ARMHF: Target = Target {
    triple: "armv7-unknown-linux-gnueabihf",
    arch: "armhf",
    readelf: "arm-linux-gnueabihf-readelf",
    machine: "ARM",
};
/// Pi OS bookworm's glibc.
const GLIBC_MAX: (u32, u32) = (2, 36);
/// The size budget for the stripped binary.
const SIZE_LIMIT: u64 = 10 * 1024 * 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Artifacts {
    binary: PathBuf,
    deb: PathBuf,
}

/// Builds (or finds up to date) the target's binary and .deb, once per test process.
fn artifacts(target: &Target) -> &'static Artifacts {
    static ARM64_ONCE: OnceLock<Artifacts> = OnceLock::new();
    static ARMHF_ONCE: OnceLock<Artifacts> = OnceLock::new();
    let once = if target.arch == "arm64" {
        &ARM64_ONCE
    } else {
        &ARMHF_ONCE
    };
    once.get_or_init(|| {
        let started = Instant::now();
        let mut package = Command::new(repo().join("cross/package.sh"));
        // `cargo test` exports CARGO_MANIFEST_DIR, CARGO_PKG_* and friends to the test.
        // ring's build script reruns when CARGO_MANIFEST_DIR changes, so inheriting them
        // would make this inner build differ from scripts/test.sh's and rebuild all of
        // it (about 2 minutes per target).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if (name == "CARGO" || name.starts_with("CARGO_"))
                && name != "CARGO_HOME"
                && name != "CARGO_TARGET_DIR"
            {
                package.env_remove(name.as_ref());
            }
        }
        let out = run(package.arg(target.triple));
        let stdout = text(&out);
        let lines: Vec<&str> = stdout.lines().collect();
        let [.., binary, deb] = lines.as_slice() else {
            panic!("cross/package.sh printed {stdout:?}");
        };
        eprintln!(
            "cross/package.sh {}: {:.0} s",
            target.triple,
            started.elapsed().as_secs_f64()
        );
        Artifacts {
            binary: PathBuf::from(binary),
            deb: PathBuf::from(deb),
        }
    })
}

fn qemu(target: &Target, binary: &Path, args: &[&str]) -> Output {
    Command::new(repo().join("cross/qemu.sh"))
        .arg(target.triple)
        .arg(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("cross/qemu.sh runs")
}

/// The highest `GLIBC_x.y` symbol version the binary needs.
fn glibc_needed(target: &Target, binary: &Path) -> (u32, u32) {
    let out = run(Command::new(target.readelf).arg("-V").arg(binary));
    text(&out)
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(str::parse::<u32>);
            Some((parts.next()?.ok()?, parts.next().unwrap_or(Ok(0)).ok()?))
        })
        .max()
        .expect("binary needs versioned glibc symbols")
}

fn binary_links_bookworm_and_passes_the_selftest_under_qemu(target: &Target) {
    let a = artifacts(target);
    let header = text(&run(Command::new(target.readelf).arg("-hd").arg(&a.binary)));
    let machine = header
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine:"))
        .map(str::trim);
    assert_eq!(machine, Some(target.machine), "not an {} ELF", target.arch);
    for lib in [
        "libgstreamer-1.0.so.0",
        "libgstapp-1.0.so.0",
        "libasound.so.2",
    ] {
        assert!(header.contains(lib), "{lib} not linked:\n{header}");
    }
    let glibc = glibc_needed(target, &a.binary);
    assert!(
        glibc <= GLIBC_MAX,
        "needs GLIBC_{}.{}, Pi OS bookworm has 2.36",
        glibc.0,
        glibc.1
    );
    let size = std::fs::metadata(&a.binary).expect("binary").len();
    let symbols = text(&run(Command::new(target.readelf).arg("-S").arg(&a.binary)));
    assert!(
        !symbols.contains(".symtab") && !symbols.contains(".debug_info"),
        "binary is not stripped"
    );
    eprintln!(
        "{} binary: {size} bytes ({:.1} MiB), needs GLIBC_{}.{}",
        target.arch,
        size as f64 / 1_048_576.0,
        glibc.0,
        glibc.1
    );
    assert!(
        size <= SIZE_LIMIT,
        "{} binary {size} bytes > 10 MiB",
        target.arch
    );

    let version = qemu(target, &a.binary, &["--version"]);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        text(&version).trim(),
        format!("edgecam {}", env!("CARGO_PKG_VERSION"))
    );

    let check = qemu(
        target,
        &a.binary,
        &[
            "--config",
            repo().join("systemd/edgecam.toml").to_str().unwrap(),
            "--check-config",
        ],
    );
    assert!(
        check.status.success() && text(&check).starts_with("configuration OK"),
        "check-config under qemu: {}{}",
        text(&check),
        String::from_utf8_lossy(&check.stderr)
    );

    // x264 under qemu-user manages about 20 fps at 640x480; ask for 15.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("selftest.toml");
    std::fs::write(
        &config,
        "[camera]\nid = \"qemu\"\n[video]\nwidth = 640\nheight = 480\nfps = 15\nbitrate_kbps = 1000\n",
    )
    .unwrap();
    let started = Instant::now();
    let selftest = qemu(
        target,
        &a.binary,
        &[
            "--config",
            config.to_str().unwrap(),
            "selftest",
            "--test-source",
            "--seconds",
            "4",
            "--json",
        ],
    );
    let elapsed = started.elapsed();
    let report: Value = serde_json::from_slice(&selftest.stdout).unwrap_or_else(|e| {
        panic!(
            "selftest printed no JSON ({e}): {}\n{}",
            text(&selftest),
            String::from_utf8_lossy(&selftest.stderr)
        )
    });
    eprintln!(
        "{} selftest under qemu ({elapsed:.1?}): {report}",
        target.arch
    );
    assert!(selftest.status.success(), "selftest failed: {report}");
    assert_eq!(report["failure"], Value::Null);
    let viewer = &report["viewer"];
    assert_eq!(viewer["firstFrameIdrWithSpsPps"], true, "{report}");
    assert_eq!(viewer["state"], "connected", "{report}");
    // 4 s at 15 fps is 60 frames; emulation may drop some, a dead path delivers none.
    let frames = viewer["videoFrames"].as_u64().unwrap_or(0);
    assert!(frames >= 20, "only {frames} frames in 4 s: {report}");
    assert!(
        viewer["opusPackets"].as_u64().unwrap_or(0) >= 50,
        "{report}"
    );
    assert!(
        report["pipeline"]
            .as_str()
            .unwrap_or("")
            .contains("encoder X264"),
        "{report}"
    );
}

fn deb_field<'a>(info: &'a str, field: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in\n{info}"))
}

fn deb_carries_binary_unit_config_viewer_and_does_not_start_the_service(target: &Target) {
    let a = artifacts(target);
    let info = text(&run(Command::new("dpkg-deb").arg("--info").arg(&a.deb)));
    assert_eq!(deb_field(&info, "Package"), "edgecam");
    assert_eq!(deb_field(&info, "Architecture"), target.arch);
    assert_eq!(
        deb_field(&info, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let depends = deb_field(&info, "Depends");
    for dep in [
        "libc6 (>= 2.34)",
        "libgstreamer1.0-0 (>= 1.22)",
        "gstreamer1.0-plugins-ugly (>= 1.22)",
        "gstreamer1.0-plugins-bad (>= 1.22)",
        "libasound2",
        "adduser",
    ] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }

    let contents = text(&run(Command::new("dpkg-deb").arg("--contents").arg(&a.deb)));
    let has = |path: &str| contents.lines().any(|l| l.ends_with(path));
    for path in [
        "./usr/bin/edgecam",
        "./usr/lib/systemd/system/edgecam.service",
        "./etc/edgecam/edgecam.toml",
        "./usr/share/edgecam/web/index.html",
        "./usr/share/edgecam/web/boot.js",
        "./usr/share/edgecam/web/viewer.js",
        "./usr/share/edgecam/web/broker.js",
        "./usr/share/edgecam/web/vendor/u8-mqtt.js",
        "./usr/share/doc/edgecam/install-on-raspberry-pi.md",
        "./usr/share/doc/edgecam/systemd.md",
    ] {
        assert!(has(path), "{path} missing from the .deb:\n{contents}");
    }
    let binary_line = contents
        .lines()
        .find(|l| l.ends_with("./usr/bin/edgecam"))
        .unwrap();
    assert!(binary_line.starts_with("-rwxr-xr-x"), "{binary_line}");

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&a.deb)
        .arg(control.path()));
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap_or_default();
    assert!(
        read("conffiles")
            .lines()
            .any(|l| l == "/etc/edgecam/edgecam.toml"),
        "config is not a conffile: {}",
        read("conffiles")
    );
    let postinst = read("postinst");
    assert!(postinst.contains("adduser --system"), "{postinst}");
    // Installed, not started: the default config is a demo, not this camera's. An
    // upgrade may re-create the links of a unit the owner enabled (`was-enabled`) and
    // `try-restart` a running one; nothing starts or enables it on its own.
    let lines: Vec<&str> = postinst
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for forbidden in [
        "systemctl start",
        "systemctl enable",
        "deb-systemd-invoke start",
        "_dh_action=start",
    ] {
        assert!(
            !lines.iter().any(|l| l.starts_with(forbidden)),
            "postinst runs `{forbidden}`:\n{postinst}"
        );
    }
    // `deb-systemd-helper enable` only for a unit this package installed before (an
    // upgrade keeping the owner's choice); `was-enabled` alone is true on a first install.
    let enable = lines
        .iter()
        .position(|l| l.starts_with("deb-systemd-helper enable"));
    let guard = lines
        .iter()
        .position(|l| l.contains("deb-systemd-helper debian-installed"));
    if let Some(enable) = enable {
        assert!(
            guard.is_some_and(|g| g < enable),
            "postinst enables the unit on a first install:\n{postinst}"
        );
    }
}

fn deb_installs_into_an_arm64_root_and_runs_there() {
    let a = artifacts(&ARM64);
    let cached = text(&run(&mut Command::new(repo().join("cross/arm64-root.sh"))));
    let root = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", cached.trim()))
        .arg(root.path()));
    std::fs::copy(&a.deb, root.path().join("tmp/edgecam.deb")).unwrap();
    let chroot = |args: &[&str]| {
        Command::new("chroot")
            .arg(root.path())
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("chroot")
    };
    let install = chroot(&["dpkg", "-i", "/tmp/edgecam.deb"]);
    let log = format!(
        "{}{}",
        text(&install),
        String::from_utf8_lossy(&install.stderr)
    );
    eprintln!("dpkg -i in the arm64 root:\n{log}");
    assert!(install.status.success(), "dpkg -i failed:\n{log}");
    assert!(
        log.contains("edgecam is installed but not started"),
        "{log}"
    );

    let status = chroot(&[
        "dpkg-query",
        "-W",
        "-f=${Status} ${Architecture}",
        "edgecam",
    ]);
    assert_eq!(text(&status), "install ok installed arm64");
    let version = chroot(&["edgecam", "--version"]);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        text(&version).trim(),
        format!("edgecam {}", env!("CARGO_PKG_VERSION"))
    );
    let id = text(&chroot(&["id", "edgecam"]));
    for group in ["video", "audio"] {
        assert!(
            id.contains(&format!("({group})")),
            "edgecam not in {group}: {id}"
        );
    }
    let enabled = chroot(&["systemctl", "is-enabled", "edgecam.service"]);
    assert_eq!(text(&enabled).trim(), "disabled", "{enabled:?}");
    let check = chroot(&[
        "edgecam",
        "--config",
        "/etc/edgecam/edgecam.toml",
        "--check-config",
    ]);
    assert!(
        text(&check).starts_with("configuration OK"),
        "{}{}",
        text(&check),
        String::from_utf8_lossy(&check.stderr)
    );

    let remove = chroot(&["dpkg", "--purge", "edgecam"]);
    assert!(remove.status.success(), "{remove:?}");
    assert!(!root.path().join("usr/bin/edgecam").exists());
}

/// The tests, under one module path so that `scripts/test.sh` can leave them to the end
/// of the suite (`--skip raspberry_pi::`), when its background cross builds are done.
mod raspberry_pi {
    use super::{ARM64, ARMHF};

    #[test]
    fn arm64_binary_links_bookworm_and_passes_the_selftest_under_qemu() {
        super::binary_links_bookworm_and_passes_the_selftest_under_qemu(&ARM64);
    }

    #[test]
    fn armhf_binary_links_bookworm_and_passes_the_selftest_under_qemu() {
        super::binary_links_bookworm_and_passes_the_selftest_under_qemu(&ARMHF);
    }

    #[test]
    fn arm64_deb_carries_binary_unit_config_viewer_and_does_not_start_the_service() {
        super::deb_carries_binary_unit_config_viewer_and_does_not_start_the_service(&ARM64);
    }

    #[test]
    fn armhf_deb_carries_binary_unit_config_viewer_and_does_not_start_the_service() {
        super::deb_carries_binary_unit_config_viewer_and_does_not_start_the_service(&ARMHF);
    }

    #[test]
    fn arm64_deb_installs_into_an_arm64_root_and_runs_there() {
        super::deb_installs_into_an_arm64_root_and_runs_there();
    }
}
