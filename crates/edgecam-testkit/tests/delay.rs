//! The delaying bridge holds each direction for its one-way delay: UDP echoes between
//! the camera and viewer namespaces of a `NetPair::with_delay` take twice it.

use edgecam_testkit::netns::NetPair;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).expect("namespace file");
        // SAFETY: a valid namespace descriptor; only this thread moves.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .expect("thread in namespace")
}

#[test]
fn round_trips_take_twice_the_one_way_delay() {
    let net = NetPair::with_delay(Duration::from_millis(20)).expect("namespaces (needs root)");
    let camera_ip = net.camera_ip.clone();
    // Sockets keep the namespace they were made in.
    let echo = in_netns(&net.camera, move || {
        UdpSocket::bind((camera_ip.as_str(), 0)).expect("bind in camera namespace")
    });
    let echo_addr = echo.local_addr().unwrap();
    let viewer_ip = net.viewer_ip.clone();
    let client = in_netns(&net.viewer, move || {
        UdpSocket::bind((viewer_ip.as_str(), 0)).expect("bind in viewer namespace")
    });
    echo.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..10 {
            let Ok((n, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let mut rtts = Vec::new();
    let mut buf = [0u8; 1500];
    for i in 0..10u8 {
        let sent = Instant::now();
        client.send_to(&[i; 1000], echo_addr).unwrap();
        // The first exchange also resolves ARP through the bridge.
        if client.recv_from(&mut buf).is_ok() {
            rtts.push(sent.elapsed());
        }
    }
    let _ = server.join();
    rtts.sort();
    assert!(rtts.len() >= 9, "echoes came back: {rtts:?}");
    let median = rtts[rtts.len() / 2];
    eprintln!(
        "delay bridge, 20 ms each way: median RTT {median:?} over {} echoes",
        rtts.len()
    );
    assert!(
        median >= Duration::from_millis(40) && median < Duration::from_millis(50),
        "RTT {median:?}"
    );
}
