//! JPEG snapshots of the current picture, without a second capture of the device.
//!
//! The pipeline has a `jpegenc` branch behind a closed `valve` (see
//! `pipeline::launch_line`): while nobody wants a snapshot it drops every buffer, so an
//! idle camera pays nothing for it. [`Snapshots::take`] opens the branch, waits for the
//! next JPEG and closes it again when the last waiter is served. Waiters that overlap
//! share one opening; a JPEG younger than the caller's `fresh` bound is served from the
//! cache without opening the branch at all.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A snapshot at most this old is served again rather than encoded anew: callers
/// polling together (dashboards, Home Assistant, viewers) share one JPEG per 200 ms.
pub const FRESH: Duration = Duration::from_millis(200);

/// How long a snapshot request waits for a picture: the branch's first JPEG comes
/// within a frame or two; longer covers a capture (re)start.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Opens (`true`) or closes (`false`) the pipeline's snapshot branch. Installed by the
/// GStreamer adapter for as long as its pipeline runs.
pub type Gate = Arc<dyn Fn(bool) + Send + Sync>;

/// One encoded picture.
#[derive(Debug, Clone)]
pub struct Jpeg {
    /// JPEG file bytes (JFIF, baseline).
    pub data: Bytes,
    /// When it was encoded, on this process's monotonic clock.
    pub at: Instant,
    /// Counts the JPEGs published since start (1, 2, ...).
    pub seq: u64,
}

/// Why no snapshot came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The running pipeline has no snapshot branch (an H.264 camera passed through
    /// with no H.264 decoder installed).
    #[error("this pipeline cannot make snapshots (no H.264 decoder for the camera's stream)")]
    Unsupported,
    /// No JPEG within the deadline: capture is (re)starting or stalled.
    #[error("no picture within {0} ms")]
    Timeout(u64),
}

/// Where the pipeline stands for snapshots.
enum Branch {
    /// No pipeline runs (between capture runs).
    NoPipeline,
    /// The running pipeline has no snapshot branch.
    Missing,
    /// The running pipeline's branch, opened and closed through this gate.
    Present(Gate),
}

struct Inner {
    branch: Mutex<(Branch, usize)>,
    latest: watch::Sender<Option<Jpeg>>,
    seq: AtomicU64,
    /// Snapshots served to callers (cached ones included).
    served: AtomicU64,
}

/// The snapshot service shared by the GStreamer adapter (which feeds it) and the
/// front-ends (HTTP, MQTT, data channel) that ask it. Cloning shares it.
#[derive(Clone)]
pub struct Snapshots {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("encoded", &self.encoded())
            .field("served", &self.served())
            .finish_non_exhaustive()
    }
}

impl Default for Snapshots {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                branch: Mutex::new((Branch::NoPipeline, 0)),
                latest: watch::channel(None).0,
                seq: AtomicU64::new(0),
                served: AtomicU64::new(0),
            }),
        }
    }
}

/// Counts one waiter while it lives; the first opens the branch, the last closes it.
struct Want<'a>(&'a Inner);

impl<'a> Want<'a> {
    fn new(inner: &'a Inner) -> Result<Self, SnapshotError> {
        let mut guard = inner.branch.lock().unwrap_or_else(|p| p.into_inner());
        let (branch, waiters) = &mut *guard;
        match branch {
            Branch::Missing => return Err(SnapshotError::Unsupported),
            Branch::Present(gate) if *waiters == 0 => gate(true),
            _ => {}
        }
        *waiters += 1;
        Ok(Self(inner))
    }
}

impl Drop for Want<'_> {
    fn drop(&mut self) {
        let mut guard = self.0.branch.lock().unwrap_or_else(|p| p.into_inner());
        let (branch, waiters) = &mut *guard;
        *waiters = waiters.saturating_sub(1);
        if let (Branch::Present(gate), 0) = (branch, *waiters) {
            gate(false);
        }
    }
}

impl Snapshots {
    /// Called by the GStreamer adapter when a pipeline starts (`Some(Some(gate))`: it
    /// has a branch; `Some(None)`: it has none) and stops (`None`). A pipeline that
    /// starts while callers wait has its branch opened at once.
    pub fn set_branch(&self, branch: Option<Option<Gate>>) {
        let mut guard = self.inner.branch.lock().unwrap_or_else(|p| p.into_inner());
        let (current, waiters) = &mut *guard;
        *current = match branch {
            None => Branch::NoPipeline,
            Some(None) => Branch::Missing,
            Some(Some(gate)) => {
                if *waiters > 0 {
                    gate(true);
                }
                Branch::Present(gate)
            }
        };
    }

    /// Called by the GStreamer adapter with each JPEG the branch encodes.
    pub fn publish(&self, data: Bytes) {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.latest.send_replace(Some(Jpeg {
            data,
            at: Instant::now(),
            seq,
        }));
    }

    /// The current picture as a JPEG: the cached one if it is at most `fresh` old,
    /// else the next one the branch encodes, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`SnapshotError::Unsupported`] at once when the running pipeline has no branch;
    /// [`SnapshotError::Timeout`] when no JPEG came in time.
    pub async fn take(&self, fresh: Duration, timeout: Duration) -> Result<Jpeg, SnapshotError> {
        let mut rx = self.inner.latest.subscribe();
        let seen = match rx.borrow_and_update().as_ref() {
            Some(jpeg) if jpeg.at.elapsed() <= fresh => {
                self.inner.served.fetch_add(1, Ordering::Relaxed);
                return Ok(jpeg.clone());
            }
            Some(jpeg) => jpeg.seq,
            None => 0,
        };
        let _want = Want::new(&self.inner)?;
        let next = async {
            loop {
                if rx.changed().await.is_err() {
                    // The sender lives in `inner`, which `self` keeps alive.
                    return None;
                }
                if let Some(jpeg) = rx.borrow_and_update().as_ref()
                    && jpeg.seq > seen
                {
                    return Some(jpeg.clone());
                }
            }
        };
        let timed_out =
            || SnapshotError::Timeout(timeout.as_millis().try_into().unwrap_or(u64::MAX));
        let jpeg = tokio::time::timeout(timeout, next)
            .await
            .map_err(|_| timed_out())?
            .ok_or_else(timed_out)?;
        self.inner.served.fetch_add(1, Ordering::Relaxed);
        Ok(jpeg)
    }

    /// JPEGs encoded since start.
    pub fn encoded(&self) -> u64 {
        self.inner.seq.load(Ordering::Relaxed)
    }

    /// Snapshots served since start (from the cache or freshly encoded).
    pub fn served(&self) -> u64 {
        self.inner.served.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn gate() -> (Gate, Arc<AtomicBool>, Arc<AtomicU64>) {
        let open = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let (o, n) = (open.clone(), opened.clone());
        let gate: Gate = Arc::new(move |on| {
            if on {
                n.fetch_add(1, Ordering::Relaxed);
            }
            o.store(on, Ordering::Relaxed);
        });
        (gate, open, opened)
    }

    #[tokio::test]
    async fn overlapping_waiters_share_one_opening_and_it_closes_after() {
        let snaps = Snapshots::default();
        let (g, open, opened) = gate();
        snaps.set_branch(Some(Some(g)));
        assert!(!open.load(Ordering::Relaxed), "closed while nobody asks");
        let a = tokio::spawn({
            let s = snaps.clone();
            async move { s.take(Duration::ZERO, Duration::from_secs(5)).await }
        });
        let b = tokio::spawn({
            let s = snaps.clone();
            async move { s.take(Duration::ZERO, Duration::from_secs(5)).await }
        });
        for _ in 0..100 {
            if open.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(open.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
        snaps.publish(Bytes::from_static(b"\xff\xd8jpeg"));
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert_eq!((a.seq, b.seq), (1, 1));
        assert_eq!(opened.load(Ordering::Relaxed), 1);
        assert!(!open.load(Ordering::Relaxed), "closed once served");
        assert_eq!(snaps.served(), 2);
    }

    #[tokio::test]
    async fn a_fresh_picture_is_served_from_the_cache_and_a_stale_one_is_not() {
        let snaps = Snapshots::default();
        let (g, open, opened) = gate();
        snaps.set_branch(Some(Some(g)));
        snaps.publish(Bytes::from_static(b"one"));
        let jpeg = snaps
            .take(Duration::from_secs(60), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(jpeg.data, Bytes::from_static(b"one"));
        assert_eq!(opened.load(Ordering::Relaxed), 0);
        // Stale: a new picture is wanted, and none comes.
        let err = snaps
            .take(Duration::ZERO, Duration::from_millis(30))
            .await
            .unwrap_err();
        assert_eq!(err, SnapshotError::Timeout(30));
        assert_eq!(opened.load(Ordering::Relaxed), 1);
        assert!(!open.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_pipeline_without_branch_refuses_at_once_and_a_restart_reopens() {
        let snaps = Snapshots::default();
        snaps.set_branch(Some(None));
        assert_eq!(
            snaps
                .take(Duration::ZERO, Duration::from_secs(5))
                .await
                .unwrap_err(),
            SnapshotError::Unsupported
        );
        // Between runs a waiter waits; the next run's branch opens for it.
        snaps.set_branch(None);
        let waiter = tokio::spawn({
            let s = snaps.clone();
            async move { s.take(Duration::ZERO, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (g, open, _) = gate();
        snaps.set_branch(Some(Some(g)));
        assert!(
            open.load(Ordering::Relaxed),
            "opened for the waiting caller"
        );
        snaps.publish(Bytes::from_static(b"two"));
        assert_eq!(waiter.await.unwrap().unwrap().seq, 1);
        assert!(!open.load(Ordering::Relaxed));
    }
}
