//! Hands a session its send-side bandwidth estimate.
//!
//! `rtc`'s congestion controller (`Slot::CongestionControl`, wire-most) resolves the
//! viewer's TWCC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01) against
//! what left, runs GCC, and attaches each new target to the feedback packet it came
//! from as `Attribute::TargetBitrateChanged`, on the read leg. Nothing past the chain
//! sees that attribute, so this pass-through interceptor sits just above the
//! controller and publishes the target on a `watch` channel for the session's feed.
//!
//! The controller runs [`LadderEstimator`]: GCC, with the probes of `peer::bwprobe`
//! measured beside it.

use crate::peer::bwprobe::{Fate, ProbeLink, ProbeMeter};
use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Gcc, Interceptor, PacketReport, StreamInfo,
    TaggedPacket,
};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// GCC (`rtc::interceptor::Gcc`) with probing: each probe window of the session's
/// [`ProbeLink`] is measured from the same TWCC reports and published there; a probe
/// that found more than GCC's target restarts GCC from the probe's figure, as
/// libwebrtc sets its delay-based estimate from a probe result (a probe is what says
/// the link carries a higher rung; GCC's own increase says only that the rate in use
/// causes no queueing).
pub(crate) struct LadderEstimator {
    gcc: Gcc,
    min_bps: f64,
    max_bps: f64,
    meter: ProbeMeter,
    probes: Arc<ProbeLink>,
}

impl LadderEstimator {
    /// Starts at `initial_bps`, within `min_bps..=max_bps` (bits per second).
    pub(crate) fn new(
        initial_bps: f64,
        min_bps: f64,
        max_bps: f64,
        probes: Arc<ProbeLink>,
    ) -> Self {
        Self {
            gcc: Gcc::new(initial_bps, min_bps, max_bps),
            min_bps,
            max_bps,
            meter: ProbeMeter::default(),
            probes,
        }
    }
}

impl BandwidthEstimator for LadderEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        for w in self.probes.take_windows() {
            self.meter.add_window(w);
        }
        let fates: Vec<Fate> = reports
            .iter()
            .map(|r| Fate {
                departure: r.departure,
                arrival: r.arrival.filter(|_| r.arrived),
                size: r.size,
            })
            .collect();
        for result in self.meter.on_fates(now, &fates) {
            if result.bps > self.gcc.target_bitrate() {
                self.gcc = Gcc::new(result.bps, self.min_bps, self.max_bps);
            }
            self.probes.publish(result);
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// Chain position: just above the congestion controller (1 000) and below the TWCC
/// sender (2 000), so it reads each target on the read leg before anything else.
pub(crate) const SLOT: usize = 1_500;

/// Pass-through interceptor publishing GCC's target, bits per second.
pub(crate) struct EstimateTap {
    estimate: watch::Sender<f64>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl EstimateTap {
    /// Publishes on `estimate` (whose initial value should be the controller's).
    pub(crate) fn new(estimate: watch::Sender<f64>) -> Self {
        Self {
            estimate,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for EstimateTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged {
                bits_per_second: 0.0,
            })
        {
            let bps = *bits_per_second;
            // A closed receiver is a session that has ended: nothing to tell.
            self.estimate.send_if_modified(|e| {
                let changed = *e != bps;
                *e = bps;
                changed
            });
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for EstimateTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, Packet, Registry, Slot};

    #[test]
    fn publishes_each_target_that_passes_and_passes_everything() {
        let (tx, rx) = watch::channel(300_000.0);
        let mut chain = Registry::new()
            .with(Slot::from(SLOT), EstimateTap::new(tx))
            .build();
        let read = |chain: &mut dyn Interceptor, message: AttributedPacket| {
            chain
                .handle_read(TaggedPacket {
                    now: Instant::now(),
                    transport: Default::default(),
                    message,
                })
                .unwrap();
            let mut passed = 0;
            while chain.poll_read().is_some() {
                passed += 1;
            }
            passed
        };
        let plain = AttributedPacket::new(Packet::Rtcp(vec![]));
        // The chain's terminus may end inbound RTCP; what matters is the estimate.
        let _ = read(&mut chain, plain.clone());
        assert!(!rx.has_changed().unwrap());
        let _ = read(
            &mut chain,
            plain.with(Attribute::TargetBitrateChanged {
                bits_per_second: 1_250_000.0,
            }),
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow(), 1_250_000.0);
    }
}
