//! A CPU budget for a process under test: a control group of its own with a CFS
//! quota, so a fast build machine can play a board whose encoders cannot keep up.
//! Needs root and the `cpu` controller (cgroup v1 `cpu.cfs_quota_us`, or cgroup v2
//! `cpu.max`). Threads the process starts later stay in the group.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The CFS period, µs.
const PERIOD_US: u64 = 100_000;

/// Which interface the `cpu` controller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A control group of its own under the `cpu` controller; removed on drop, after its
/// processes are moved back to the root group.
#[derive(Debug)]
pub struct CpuLimit {
    root: PathBuf,
    dir: PathBuf,
    version: Version,
}

/// Where the `cpu` controller is mounted, from `/proc/self/mounts`.
fn controller() -> io::Result<(PathBuf, Version)> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, dir, kind, options, ..] = f.as_slice() else {
            continue;
        };
        match *kind {
            "cgroup" if options.split(',').any(|o| o == "cpu") => {
                return Ok((PathBuf::from(dir), Version::V1));
            }
            "cgroup2" => {
                let controllers = fs::read_to_string(Path::new(dir).join("cgroup.controllers"))
                    .unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == "cpu") {
                    v2 = Some(PathBuf::from(dir));
                }
            }
            _ => {}
        }
    }
    v2.map(|d| (d, Version::V2)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup cpu controller is mounted",
        )
    })
}

impl CpuLimit {
    /// A new, unlimited group named `name` (made unique with this process's id).
    ///
    /// # Errors
    /// No `cpu` controller, or the group cannot be made (not root).
    pub fn new(name: &str) -> io::Result<Self> {
        let (root, version) = controller()?;
        if version == Version::V2 {
            // Children get the controller only when the parent hands it down.
            fs::write(root.join("cgroup.subtree_control"), "+cpu")?;
        }
        let dir = root.join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        Ok(Self { root, dir, version })
    }

    /// Moves process `pid` (all its threads) into the group.
    ///
    /// # Errors
    /// The process is gone, or the write is refused.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Limits the group to `cores` of CPU time (0.5: half of one core), or lifts the
    /// limit for `None`.
    ///
    /// # Errors
    /// The write is refused.
    pub fn limit(&self, cores: Option<f64>) -> io::Result<()> {
        // Realistic budgets are a few cores: the quota fits u64 many times over.
        let quota = cores.map(|c| ((c * PERIOD_US as f64) as u64).max(1000));
        match self.version {
            Version::V1 => {
                fs::write(self.dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                let q = quota.map_or_else(|| "-1".to_owned(), |q| q.to_string());
                fs::write(self.dir.join("cpu.cfs_quota_us"), q)
            }
            Version::V2 => {
                let q = quota.map_or_else(|| "max".to_owned(), |q| q.to_string());
                fs::write(self.dir.join("cpu.max"), format!("{q} {PERIOD_US}"))
            }
        }
    }

    /// How long the group's processes were held back by the quota since it was made,
    /// ms (`cpu.stat`: v1 `throttled_time`, v2 `throttled_usec`); `None` if unreadable.
    pub fn throttled_ms(&self) -> Option<u64> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        stat.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            match k {
                "throttled_time" => v.trim().parse::<u64>().ok().map(|ns| ns / 1_000_000),
                "throttled_usec" => v.trim().parse::<u64>().ok().map(|us| us / 1000),
                _ => None,
            }
        })
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        let _ = self.limit(None);
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// CPU time a process used, ms, from `/proc/<pid>/stat` (utime + stime, in clock
    /// ticks of 10 ms).
    fn cpu_ms(pid: u32) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after = stat.rsplit_once(')').expect("comm").1;
        let f: Vec<&str> = after.split_whitespace().collect();
        (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) * 10
    }

    #[test]
    fn a_busy_loop_gets_its_quota_and_no_more() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let limit = CpuLimit::new("edgecam-testkit-cpu").expect("cgroup (needs root)");
        limit.add(child.id()).expect("add");
        limit.limit(Some(0.2)).expect("limit");
        let (t0, c0) = (Instant::now(), cpu_ms(child.id()));
        std::thread::sleep(Duration::from_secs(2));
        let share = (cpu_ms(child.id()) - c0) as f64 / t0.elapsed().as_millis() as f64;
        let throttled = limit.throttled_ms();
        let _ = child.kill();
        let _ = child.wait();
        assert!((0.1..0.3).contains(&share), "used {share:.2} of a core");
        assert!(throttled.is_some_and(|t| t > 0), "{throttled:?}");
    }
}
