//! A delaying Ethernet bridge between two interfaces of a network namespace, for links
//! with a round-trip time (this kernel has no `sch_netem`).
//!
//! Two `AF_PACKET` sockets, one per interface, opened inside the namespace; a thread per
//! direction holds each frame for the one-way delay and then sends it out of the other
//! interface. The interfaces carry no addresses, so the namespace's own stack ignores
//! the frames. `PACKET_VNET_HDR` (packet(7)) carries each frame's offload state across:
//! a TCP segment from a veth can be 64 kB with its checksum still to compute, and the
//! virtio-net header passed back on send lets the kernel segment and checksum it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// packet(7): `SOL_PACKET` option carrying a virtio-net header before each frame.
const PACKET_VNET_HDR: libc::c_int = 15;
/// packet(7): `sll_pkttype` of a frame this host sent (seen by a socket bound to the
/// interface it left by).
const PACKET_OUTGOING: u8 = 4;
/// Frames held per direction at most; more are dropped (a bound on memory).
const MAX_HELD: usize = 20_000;
/// A frame with its virtio-net header: up to a 64 kB GSO segment.
const FRAME_BYTES: usize = 65_536 + 64;

/// A running bridge; stopped on drop.
pub struct DelayBridge {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayBridge {
    /// Bridges interfaces `a` and `b` of namespace `ns`, each direction delayed by
    /// `one_way`. Needs root.
    pub fn start(ns: &str, a: &str, b: &str, one_way: Duration) -> Result<Self, String> {
        let (ns, a, b) = (ns.to_owned(), a.to_owned(), b.to_owned());
        // The sockets are made in the namespace; the thread that entered it ends here.
        let (sa, sb) = std::thread::spawn(move || -> Result<(OwnedFd, OwnedFd), String> {
            enter_netns(&ns)?;
            Ok((packet_socket(&a)?, packet_socket(&b)?))
        })
        .join()
        .map_err(|_| "delay bridge setup panicked".to_owned())??;
        let (sa, sb) = (Arc::new(sa), Arc::new(sb));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [(sa.clone(), sb.clone()), (sb, sa)]
            .into_iter()
            .map(|(from, to)| {
                let stop = stop.clone();
                std::thread::spawn(move || forward(&from, &to, one_way, &stop))
            })
            .collect();
        Ok(Self { stop, threads })
    }
}

impl Drop for DelayBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn enter_netns(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .map_err(|e| format!("namespace {ns}: {e}"))?;
    // SAFETY: a valid namespace file descriptor; only this thread moves.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn packet_socket(ifname: &str) -> Result<OwnedFd, String> {
    let err = |what: &str| format!("{what} ({ifname}): {}", std::io::Error::last_os_error());
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
    if fd < 0 {
        return Err(err("socket"));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(err("if_nametoindex"));
    }
    let on: libc::c_int = 1;
    // SAFETY: an int option of the right size.
    if unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(err("PACKET_VNET_HDR"));
    }
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are its address.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size given.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(err("bind"));
    }
    Ok(fd)
}

/// Moves frames arriving on `from` out of `to`, each `delay` after it came, until
/// `stop`.
fn forward(from: &OwnedFd, to: &OwnedFd, delay: Duration, stop: &AtomicBool) {
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; FRAME_BYTES];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, frame)) = held.pop_front() {
                // SAFETY: sending from a live buffer of the given length.
                unsafe {
                    libc::send(to.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0);
                }
            }
        }
        let wait = held
            .front()
            .map_or(Duration::from_millis(10), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(10));
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Millisecond polls: the delay is kept to about a millisecond.
        let ms = wait.as_millis().min(10) as libc::c_int;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: zeroed sockaddr_ll is valid for recvfrom to fill.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: receiving into a live buffer of the given length.
            let n = unsafe {
                libc::recvfrom(
                    from.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut addr).cast(),
                    &raw mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else { break };
            // What this bridge sent out of `from` comes back here; it is not traffic.
            if addr.sll_pkttype == PACKET_OUTGOING || held.len() >= MAX_HELD {
                continue;
            }
            held.push_back((Instant::now() + delay, buf[..n].to_vec()));
        }
    }
}
