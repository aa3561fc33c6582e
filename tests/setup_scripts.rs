//! The set-up scripts on a machine where another apt is running: they wait for the dpkg
//! lock instead of failing with "Could not get lock" (unattended-upgrades holds it
//! right after boot on a fresh machine).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Holds the dpkg frontend lock the way apt does (an fcntl write lock) for `hold`.
fn hold_dpkg_lock(hold: Duration) -> std::process::Child {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys,time\n\
             f=open('/var/lib/dpkg/lock-frontend','a')\n\
             fcntl.lockf(f,fcntl.LOCK_EX)\n\
             print('locked',flush=True)\n\
             time.sleep(float(sys.argv[1]))",
            &hold.as_secs_f64().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("lock holder reports");
    assert_eq!(line.trim(), "locked");
    child
}

/// apt-get with the lock held: bare it fails at once; through `scripts/apt.sh` it waits
/// for the holder and then succeeds (an install of an installed package, so nothing on
/// the machine changes).
#[test]
fn apt_helper_waits_for_the_dpkg_lock() {
    assert!(
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n"),
        "the suite runs as root (apt-get and network namespaces need it)"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let mut holder = hold_dpkg_lock(Duration::from_secs(4));
    let bare = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-upgrade",
            "--no-install-recommends",
            "bash",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("apt-get");
    assert!(
        !bare.status.success() && String::from_utf8_lossy(&bare.stderr).contains("lock"),
        "without waiting, apt-get fails on the lock: {bare:?}"
    );
    let started = Instant::now();
    let helped = Command::new("bash")
        .args([
            "-c",
            "source scripts/apt.sh && APT_LOCK_WAIT=60 apt_get install -y -q --no-upgrade --no-install-recommends bash",
        ])
        .current_dir(root)
        .output()
        .expect("bash");
    let waited = started.elapsed();
    let _ = holder.wait();
    assert!(
        helped.status.success(),
        "apt_get waits for the lock and succeeds: {}",
        String::from_utf8_lossy(&helped.stderr)
    );
    assert!(
        waited >= Duration::from_secs(2),
        "it did wait for the holder ({waited:?})"
    );
}
