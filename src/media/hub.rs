//! Encode once, fan out: one [`Hub`] per elementary stream, fed by the appsink callback,
//! with one bounded queue per viewer ([`Subscription`]).
//!
//! A viewer's queue never blocks the publisher: when it is full the viewer loses its
//! queued frames and waits for the next keyframe (video), so a slow viewer resyncs on an
//! IDR and never slows capture or other viewers. Keyframe requests from joins, resyncs
//! and PLI/FIR are coalesced and rate-limited into one upstream force-key-unit.

use super::Frame;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Asks the encoder for a keyframe (the GStreamer adapter sends a force-key-unit event).
pub type KeyframeRequester = Arc<dyn Fn() + Send + Sync>;

/// Told whether anyone is subscribed (`true` from the first subscriber on, `false` when
/// the last one leaves): an encoder that runs only on demand (the VP8 rung) opens and
/// closes its branch with it.
pub type DemandHook = Arc<dyn Fn(bool) + Send + Sync>;

/// The demand hook and the state it was last told, so it hears each change once.
#[derive(Default)]
struct Demand {
    hook: Option<DemandHook>,
    told: Option<bool>,
}

/// Coalesces keyframe requests: at most one upstream request per `min_interval`; a
/// request inside that window is remembered and sent when the window ends, unless a
/// keyframe arrives first. Pure; time is passed in.
#[derive(Debug, Clone)]
pub struct KeyframeGate {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending_since: Option<Instant>,
    unanswered_since: Option<Instant>,
}

impl KeyframeGate {
    /// A gate letting one request through per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            pending_since: None,
            unanswered_since: None,
        }
    }

    /// Registers a request at `now`; returns whether to send one upstream now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(at) if now.saturating_duration_since(at) < self.min_interval => {
                self.pending_since.get_or_insert(now);
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending_since = None;
                self.unanswered_since.get_or_insert(now);
                true
            }
        }
    }

    /// A keyframe left the encoder at `now`: it satisfies requests made before the one
    /// that triggered it was sent.
    pub fn on_keyframe(&mut self, _now: Instant) {
        self.unanswered_since = None;
        if let (Some(pending), Some(sent)) = (self.pending_since, self.last_sent)
            && pending <= sent
        {
            self.pending_since = None;
        }
        // A keyframe with nothing sent (a periodic IDR) satisfies every waiting request.
        if self.last_sent.is_none() {
            self.pending_since = None;
        }
    }

    /// How long the oldest request sent upstream has gone without a keyframe, at
    /// `now`; `None` when every request sent was answered. A source that ignores
    /// requests (a camera's own H.264) shows here.
    pub fn unanswered_for(&self, now: Instant) -> Option<Duration> {
        self.unanswered_since
            .map(|at| now.saturating_duration_since(at))
    }

    /// Returns whether a remembered request is due to be sent at `now`.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.pending_since.is_some()
            && self
                .last_sent
                .is_none_or(|at| now.saturating_duration_since(at) >= self.min_interval)
        {
            self.last_sent = Some(now);
            self.pending_since = None;
            self.unanswered_since.get_or_insert(now);
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Frame>,
    needs_keyframe: bool,
    dropped: u64,
}

#[derive(Debug)]
struct Slot {
    queue: Mutex<Queue>,
    notify: Notify,
    closed: AtomicBool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (pushes
        // and pops only), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    name: &'static str,
    gated: bool,
    capacity: usize,
    slots: Mutex<Vec<Arc<Slot>>>,
    gate: Mutex<KeyframeGate>,
    requester: Mutex<Option<KeyframeRequester>>,
    demand: Mutex<Demand>,
    published: AtomicU64,
    published_bytes: AtomicU64,
    keyframe_requests_sent: AtomicU64,
}

/// The fan-out point of one elementary stream. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// Counters of a hub, for stats and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Frames published since start.
    pub published: u64,
    /// Bytes of the frames published since start (the encoder's output).
    pub published_bytes: u64,
    /// Force-key-unit requests actually sent upstream.
    pub keyframe_requests_sent: u64,
    /// Current subscribers.
    pub subscribers: usize,
}

impl Hub {
    /// A hub whose viewers each hold at most `capacity` frames. With `gated`, a viewer
    /// starts, and resumes after an overflow, only at a keyframe (video); without, every
    /// frame is a starting point (audio). `keyframe_interval` is the coalescing window.
    pub fn new(
        name: &'static str,
        capacity: usize,
        gated: bool,
        keyframe_interval: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                gated,
                capacity: capacity.max(1),
                slots: Mutex::new(Vec::new()),
                gate: Mutex::new(KeyframeGate::new(keyframe_interval)),
                requester: Mutex::new(None),
                demand: Mutex::new(Demand::default()),
                published: AtomicU64::new(0),
                published_bytes: AtomicU64::new(0),
                keyframe_requests_sent: AtomicU64::new(0),
            }),
        }
    }

    /// Installs the function that asks the encoder for a keyframe (replaced on every
    /// capture restart).
    pub fn set_keyframe_requester(&self, requester: Option<KeyframeRequester>) {
        *lock(&self.inner.requester) = requester;
    }

    /// Installs the hook told whether anyone is subscribed (replaced on every capture
    /// restart; `None` removes it). A new hook is told the current state at once.
    pub fn set_demand_hook(&self, hook: Option<DemandHook>) {
        let mut demand = lock(&self.inner.demand);
        demand.hook = hook;
        demand.told = None;
        drop(demand);
        refresh_demand(&self.inner);
    }

    /// A new viewer queue. A gated subscription receives nothing until the next keyframe;
    /// call [`Subscription::request_keyframe`] when the viewer is ready to receive.
    pub fn subscribe(&self) -> Subscription {
        let slot = Arc::new(Slot {
            queue: Mutex::new(Queue {
                needs_keyframe: self.inner.gated,
                ..Queue::default()
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        lock(&self.inner.slots).push(slot.clone());
        refresh_demand(&self.inner);
        Subscription {
            slot,
            hub: Arc::downgrade(&self.inner),
        }
    }

    /// Hands `frame` to every viewer queue; never blocks on a viewer.
    pub fn publish(&self, frame: Frame) {
        let now = Instant::now();
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        self.inner
            .published_bytes
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        let mut resync = false;
        {
            let slots = lock(&self.inner.slots);
            for slot in slots.iter() {
                let mut q = slot.lock();
                if q.needs_keyframe && !frame.keyframe {
                    continue;
                }
                if q.frames.len() >= self.inner.capacity {
                    // Slow viewer: what it has queued is stale; restart it at a keyframe.
                    q.dropped += q.frames.len() as u64;
                    q.frames.clear();
                    if self.inner.gated && !frame.keyframe {
                        q.dropped += 1;
                        q.needs_keyframe = true;
                        resync = true;
                        continue;
                    }
                }
                q.needs_keyframe = false;
                q.frames.push_back(frame.clone());
                drop(q);
                slot.notify.notify_one();
            }
        }
        let fire = {
            let mut gate = lock(&self.inner.gate);
            if frame.keyframe {
                gate.on_keyframe(now);
            }
            let due = gate.poll(now);
            (resync && gate.request(now)) || due
        };
        if fire {
            self.send_keyframe_request();
        }
    }

    fn request_keyframe(&self) {
        if !self.inner.gated {
            return;
        }
        let fire = lock(&self.inner.gate).request(Instant::now());
        if fire {
            self.send_keyframe_request();
        }
    }

    fn send_keyframe_request(&self) {
        let requester = lock(&self.inner.requester).clone();
        if let Some(request) = requester {
            self.inner
                .keyframe_requests_sent
                .fetch_add(1, Ordering::Relaxed);
            request();
        }
    }

    /// A new run of the source begins (capture restarted, or switched between the
    /// camera and the test pattern): its first frames may depend on pictures no viewer
    /// has, so every viewer of a gated hub keeps what it has queued but takes nothing
    /// new until a keyframe, which is requested once for all of them.
    pub fn new_run(&self) {
        if !self.inner.gated {
            return;
        }
        let viewers = {
            let slots = lock(&self.inner.slots);
            for slot in slots.iter() {
                slot.lock().needs_keyframe = true;
            }
            slots.len()
        };
        // Nobody waits: no request, which a camera's own H.264 would leave unanswered
        // and have counted against it (see `KeyframeGate::unanswered_for`).
        if viewers > 0 {
            self.request_keyframe();
        }
    }

    /// How long the oldest keyframe request sent upstream has gone unanswered; `None`
    /// when none waits (see [`KeyframeGate::unanswered_for`]).
    pub fn keyframe_wait(&self) -> Option<Duration> {
        lock(&self.inner.gate).unanswered_for(Instant::now())
    }

    /// Current counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            published: self.inner.published.load(Ordering::Relaxed),
            published_bytes: self.inner.published_bytes.load(Ordering::Relaxed),
            keyframe_requests_sent: self.inner.keyframe_requests_sent.load(Ordering::Relaxed),
            subscribers: lock(&self.inner.slots).len(),
        }
    }

    /// Wakes every viewer with end-of-stream (used at shutdown).
    pub fn close(&self) {
        for slot in lock(&self.inner.slots).iter() {
            slot.closed.store(true, Ordering::Release);
            slot.notify.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells the demand hook whether anyone is subscribed, if that changed. The count is
/// read under the demand lock, so concurrent subscribes and drops cannot tell the hook
/// an outdated state last.
fn refresh_demand(inner: &Inner) {
    let mut demand = lock(&inner.demand);
    let wanted = !lock(&inner.slots).is_empty();
    if demand.told != Some(wanted) {
        demand.told = Some(wanted);
        if let Some(hook) = &demand.hook {
            hook(wanted);
        }
    }
}

/// One viewer's queue on a [`Hub`]. Dropping it unsubscribes.
pub struct Subscription {
    slot: Arc<Slot>,
    hub: Weak<Inner>,
}

impl Subscription {
    /// The next frame, waiting if none is queued; `None` once the hub closed.
    pub async fn recv(&self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.slot.lock().frames.pop_front() {
                return Some(frame);
            }
            if self.slot.closed.load(Ordering::Acquire) {
                return None;
            }
            // notify_one stores a permit when nobody waits, so a publish between the
            // check above and this await is not lost.
            self.slot.notify.notified().await;
        }
    }

    /// A queued frame if there is one, without waiting.
    pub fn try_recv(&self) -> Option<Frame> {
        self.slot.lock().frames.pop_front()
    }

    /// Drops queued frames and waits for the next keyframe; asks the encoder for one
    /// (coalesced with other viewers' requests). For a viewer that just connected, or
    /// a PLI/FIR from it.
    pub fn request_keyframe(&self) {
        let Some(inner) = self.hub.upgrade() else {
            return;
        };
        Hub { inner }.request_keyframe();
    }

    /// Starts receiving at the next keyframe: drops what is queued, then requests one.
    pub fn resync(&self) {
        {
            let mut q = self.slot.lock();
            if let Some(inner) = self.hub.upgrade()
                && inner.gated
            {
                q.frames.clear();
                q.needs_keyframe = true;
            }
        }
        self.request_keyframe();
    }

    /// Frames this viewer lost to a full queue since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.slot.lock().dropped)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.hub.upgrade() {
            lock(&inner.slots).retain(|s| !Arc::ptr_eq(s, &self.slot));
            refresh_demand(&inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize;

    fn frame(n: u64, keyframe: bool) -> Frame {
        Frame {
            data: Bytes::from(n.to_le_bytes().to_vec()),
            pts: Duration::from_millis(33 * n),
            duration: Duration::from_millis(33),
            keyframe,
            captured_at: Instant::now(),
            payloads: Default::default(),
        }
    }

    fn n(f: &Frame) -> u64 {
        u64::from_le_bytes(f.data[..8].try_into().unwrap())
    }

    fn counting_hub(capacity: usize) -> (Hub, Arc<AtomicUsize>) {
        let hub = Hub::new("video", capacity, true, Duration::from_millis(200));
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        hub.set_keyframe_requester(Some(Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })));
        (hub, count)
    }

    #[test]
    fn a_new_viewer_starts_at_a_keyframe() {
        let (hub, _) = counting_hub(8);
        let sub = hub.subscribe();
        hub.publish(frame(1, false));
        hub.publish(frame(2, false));
        assert!(sub.try_recv().is_none());
        hub.publish(frame(3, true));
        hub.publish(frame(4, false));
        assert_eq!(n(&sub.try_recv().unwrap()), 3);
        assert_eq!(n(&sub.try_recv().unwrap()), 4);
    }

    #[test]
    fn slow_viewer_drops_then_resyncs_on_keyframe_without_hurting_others() {
        let (hub, requests) = counting_hub(3);
        let slow = hub.subscribe();
        let fast = hub.subscribe();
        hub.publish(frame(0, true));
        let mut fast_got = vec![];
        for i in 1..=6 {
            hub.publish(frame(i, false));
            while let Some(f) = fast.try_recv() {
                fast_got.push(n(&f));
            }
        }
        assert_eq!(fast_got, vec![0, 1, 2, 3, 4, 5, 6]);
        // The slow viewer overflowed at frame 3 and then waits for a keyframe.
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        assert!(slow.try_recv().is_none());
        assert_eq!(slow.take_dropped(), 4);
        hub.publish(frame(7, true));
        assert_eq!(n(&slow.try_recv().unwrap()), 7);
        assert_eq!(n(&fast.try_recv().unwrap()), 7);
    }

    #[test]
    fn a_new_run_gates_every_viewer_until_its_first_keyframe() {
        let (hub, requests) = counting_hub(8);
        let a = hub.subscribe();
        let b = hub.subscribe();
        hub.publish(frame(0, true));
        hub.publish(frame(1, false));
        hub.new_run();
        assert_eq!(requests.load(Ordering::SeqCst), 1, "one request for all");
        // A passthrough camera may resume mid-GOP: those frames reach nobody.
        hub.publish(frame(2, false));
        hub.publish(frame(3, true));
        for sub in [&a, &b] {
            let got: Vec<u64> = std::iter::from_fn(|| sub.try_recv())
                .map(|f| n(&f))
                .collect();
            assert_eq!(got, vec![0, 1, 3]);
        }
        drop((a, b));
        hub.new_run();
        assert_eq!(requests.load(Ordering::SeqCst), 1, "no viewer, no request");
        let audio = Hub::new("audio", 8, false, Duration::from_millis(200));
        let s = audio.subscribe();
        audio.new_run();
        audio.publish(frame(9, false));
        assert_eq!(n(&s.try_recv().unwrap()), 9, "audio is never gated");
    }

    #[test]
    fn keyframe_requests_are_coalesced_and_rate_limited() {
        let (hub, requests) = counting_hub(8);
        let subs: Vec<_> = (0..10).map(|_| hub.subscribe()).collect();
        for s in &subs {
            s.request_keyframe();
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1, "ten joins, one request");
        assert_eq!(hub.stats().keyframe_requests_sent, 1);
    }

    #[test]
    fn a_request_is_unanswered_until_a_keyframe_arrives() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut gate = KeyframeGate::new(ms(200));
        assert_eq!(gate.unanswered_for(t0), None);
        assert!(gate.request(t0));
        // Later requests, sent or not, do not make the wait look shorter.
        assert!(!gate.request(t0 + ms(100)));
        assert!(gate.poll(t0 + ms(300)));
        assert_eq!(gate.unanswered_for(t0 + ms(4000)), Some(ms(4000)));
        gate.on_keyframe(t0 + ms(4100));
        assert_eq!(gate.unanswered_for(t0 + ms(4200)), None);
        assert!(gate.request(t0 + ms(5000)));
        assert_eq!(gate.unanswered_for(t0 + ms(5500)), Some(ms(500)));
    }

    #[test]
    fn gate_releases_a_pending_request_after_the_window() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::new(Duration::from_millis(200));
        assert!(gate.request(t0));
        assert!(!gate.request(t0 + Duration::from_millis(50)));
        assert!(!gate.poll(t0 + Duration::from_millis(100)));
        assert!(gate.poll(t0 + Duration::from_millis(200)));
        assert!(!gate.poll(t0 + Duration::from_millis(500)), "sent once");
        // A request made before the last one was sent is satisfied by the keyframe.
        let mut gate = KeyframeGate::new(Duration::from_millis(200));
        assert!(gate.request(t0));
        gate.on_keyframe(t0 + Duration::from_millis(30));
        assert!(!gate.poll(t0 + Duration::from_millis(300)));
    }

    #[test]
    fn audio_is_never_gated_and_overflow_keeps_the_newest() {
        let hub = Hub::new("audio", 2, false, Duration::from_millis(200));
        let sub = hub.subscribe();
        for i in 0..5 {
            hub.publish(frame(i, true));
        }
        let got: Vec<_> = std::iter::from_fn(|| sub.try_recv())
            .map(|f| n(&f))
            .collect();
        assert_eq!(got, vec![4]);
    }

    #[test]
    fn the_demand_hook_hears_first_subscriber_and_last_leaver_once_each() {
        let hub = Hub::new("vp8", 4, true, Duration::from_millis(200));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        hub.set_demand_hook(Some(Arc::new(move |on| log.lock().unwrap().push(on))));
        assert_eq!(*heard.lock().unwrap(), [false], "told the state at once");
        let a = hub.subscribe();
        let b = hub.subscribe();
        drop(a);
        assert_eq!(*heard.lock().unwrap(), [false, true]);
        drop(b);
        assert_eq!(*heard.lock().unwrap(), [false, true, false]);
        // A hook installed while someone watches (a capture restart) is told at once.
        let c = hub.subscribe();
        let again = Arc::new(Mutex::new(Vec::new()));
        let log = again.clone();
        hub.set_demand_hook(Some(Arc::new(move |on| log.lock().unwrap().push(on))));
        assert_eq!(*again.lock().unwrap(), [true]);
        hub.set_demand_hook(None);
        drop(c);
        assert_eq!(
            *again.lock().unwrap(),
            [true],
            "a removed hook hears nothing"
        );
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let (hub, _) = counting_hub(8);
        let a = hub.subscribe();
        let b = hub.subscribe();
        assert_eq!(hub.stats().subscribers, 2);
        drop(a);
        assert_eq!(hub.stats().subscribers, 1);
        drop(b);
        assert_eq!(hub.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn recv_wakes_on_publish_and_ends_on_close() {
        let (hub, _) = counting_hub(8);
        let sub = hub.subscribe();
        let h = hub.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            h.publish(frame(9, true));
            tokio::time::sleep(Duration::from_millis(20)).await;
            h.close();
        });
        assert_eq!(n(&sub.recv().await.unwrap()), 9);
        assert!(sub.recv().await.is_none());
        t.await.unwrap();
    }
}
