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
//!
//! A viewer that did not negotiate TWCC sends no feedback the controller can use; for
//! it the tap falls back to [`LossEstimate`]: GCC's loss-based controller
//! (draft-ietf-rmcat-gcc-02 §6) over the fraction lost in its RTCP receiver reports
//! (RFC 3550 §6.4.2), capped by its REMB (draft-alvestrand-rmcat-remb-03) where it
//! sends one.

use crate::peer::bwprobe::{Fate, ProbeLink, ProbeMeter};
use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Gcc, Interceptor, PacketReport, StreamInfo,
    TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// With no TWCC feedback for this long, the estimate comes from [`LossEstimate`].
pub const TWCC_SILENCE: Duration = Duration::from_secs(2);
/// [`LossEstimate`] decreases at most this often: a browser puts a receiver report in
/// every compound RTCP packet, NACKs included, so under loss reports come many times a
/// second, each covering a short interval (libwebrtc's loss-based estimator waits
/// 300 ms + RTT).
pub const LOSS_DECREASE_EVERY: Duration = Duration::from_millis(300);
/// [`LossEstimate`] increases at most this often, by 8 % (libwebrtc's `kBweIncreaseInterval`).
pub const LOSS_INCREASE_EVERY: Duration = Duration::from_secs(1);

/// GCC's loss-based controller (draft-ietf-rmcat-gcc-02 §6) over RTCP receiver
/// reports, capped by the viewer's REMB: the estimate of a viewer without TWCC. Pure;
/// every instant is a parameter.
#[derive(Debug, Clone)]
pub struct LossEstimate {
    bps: f64,
    min_bps: f64,
    max_bps: f64,
    remb_bps: Option<f64>,
    last_twcc: Option<Instant>,
    last_change: Option<Instant>,
    started: Instant,
}

impl LossEstimate {
    /// Starts at `initial_bps`, within `min_bps..=max_bps` (bits per second), at `now`.
    pub fn new(now: Instant, initial_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        Self {
            bps: initial_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            remb_bps: None,
            last_twcc: None,
            last_change: None,
            started: now,
        }
    }

    /// TWCC feedback arrived at `now`: the controller has what it needs.
    pub fn on_twcc(&mut self, now: Instant) {
        self.last_twcc = Some(now);
    }

    /// The viewer's REMB, bits per second.
    pub fn on_remb(&mut self, bps: f64) {
        self.remb_bps = Some(bps);
    }

    /// A receiver report's fraction lost (RFC 3550 §6.4.1: lost/expected × 256) since
    /// the previous one, at `now`: over 10 % the estimate falls by half the loss (at
    /// most every [`LOSS_DECREASE_EVERY`]), under 2 % it rises 8 % (at most every
    /// [`LOSS_INCREASE_EVERY`]); draft-ietf-rmcat-gcc-02 §6.
    pub fn on_fraction_lost(&mut self, now: Instant, fraction_lost: u8) {
        let loss = f64::from(fraction_lost) / 256.0;
        let since = self
            .last_change
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        if loss > 0.1 && since >= LOSS_DECREASE_EVERY {
            self.bps *= 1.0 - 0.5 * loss;
            self.last_change = Some(now);
        } else if loss < 0.02 && since >= LOSS_INCREASE_EVERY {
            self.bps *= 1.08;
            self.last_change = Some(now);
        }
        self.bps = self.bps.clamp(self.min_bps, self.max_bps);
    }

    /// The estimate at `now`, bits per second, when this is the viewer's estimate: no
    /// TWCC feedback within [`TWCC_SILENCE`] (nor since the start, that long ago).
    pub fn estimate(&self, now: Instant) -> Option<f64> {
        let since = self.last_twcc.unwrap_or(self.started);
        if now.saturating_duration_since(since) < TWCC_SILENCE {
            return None;
        }
        Some(
            self.remb_bps
                .map_or(self.bps, |r| self.bps.min(r))
                .max(self.min_bps),
        )
    }
}

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
    fallback: LossEstimate,
    /// The camera's SSRCs, whose receiver reports count.
    local_ssrcs: HashSet<u32>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl EstimateTap {
    /// Publishes on `estimate` (whose initial value should be the controller's); the
    /// fallback starts there too, held within `min_bps..=max_bps`.
    pub(crate) fn new(estimate: watch::Sender<f64>, min_bps: f64, max_bps: f64) -> Self {
        let initial = *estimate.borrow();
        Self {
            estimate,
            fallback: LossEstimate::new(Instant::now(), initial, min_bps, max_bps),
            local_ssrcs: HashSet::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn publish(&self, bps: f64) {
        // A closed receiver is a session that has ended: nothing to tell.
        self.estimate.send_if_modified(|e| {
            let changed = *e != bps;
            *e = bps;
            changed
        });
    }

    /// Feeds the fallback from the viewer's RTCP at `now`.
    fn fallback_from(&mut self, now: Instant, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let mut report = false;
        for p in packets {
            let any = p.as_any();
            if any.is::<TransportLayerCc>() {
                self.fallback.on_twcc(now);
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                self.fallback.on_remb(f64::from(remb.bitrate));
                report = true;
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                // The worst of the camera's streams.
                if let Some(lost) = rr
                    .reports
                    .iter()
                    .filter(|r| self.local_ssrcs.contains(&r.ssrc))
                    .map(|r| r.fraction_lost)
                    .max()
                {
                    self.fallback.on_fraction_lost(now, lost);
                    report = true;
                }
            }
        }
        if report && let Some(bps) = self.fallback.estimate(now) {
            self.publish(bps);
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
            self.publish(*bits_per_second);
        }
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
            self.fallback_from(msg.now, packets);
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
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.local_ssrcs.insert(info.ssrc);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.local_ssrcs.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_twcc_loss_and_remb_make_the_estimate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut e = LossEstimate::new(t0, 2_540_000.0, 100_000.0, 3_810_000.0);
        assert_eq!(e.estimate(t0 + ms(1000)), None, "TWCC may still come");
        e.on_twcc(t0 + ms(500));
        assert_eq!(e.estimate(t0 + ms(2000)), None, "TWCC is flowing");
        // Silent for 2 s: the fallback speaks. 40 % lost (102/256): down by 20 %, and
        // not again within 300 ms however many reports come.
        e.on_fraction_lost(t0 + ms(2500), 102);
        e.on_fraction_lost(t0 + ms(2600), 102);
        let after = e.estimate(t0 + ms(2600)).unwrap();
        assert!((after - 2_540_000.0 * 0.8).abs() < 5_000.0, "{after}");
        e.on_fraction_lost(t0 + ms(2800), 102);
        assert!(e.estimate(t0 + ms(2800)).unwrap() < after * 0.81);
        let after = e.estimate(t0 + ms(2800)).unwrap();
        // 5 % lost: hold.
        e.on_fraction_lost(t0 + ms(4000), 13);
        assert_eq!(e.estimate(t0 + ms(4000)), Some(after));
        // No loss: up 8 % a second, never past the maximum.
        e.on_fraction_lost(t0 + ms(4000), 0);
        e.on_fraction_lost(t0 + ms(4500), 0);
        assert!((e.estimate(t0 + ms(4500)).unwrap() - after * 1.08).abs() < 1.0);
        for s in 5..100 {
            e.on_fraction_lost(t0 + ms(s * 1000), 0);
        }
        assert_eq!(e.estimate(t0 + ms(100_000)), Some(3_810_000.0));
        // REMB caps it.
        e.on_remb(700_000.0);
        assert_eq!(e.estimate(t0 + ms(100_000)), Some(700_000.0));
    }
    use rtc::interceptor::{AttributedPacket, Packet, Registry, Slot};

    #[test]
    fn publishes_each_target_that_passes_and_passes_everything() {
        let (tx, rx) = watch::channel(300_000.0);
        let mut chain = Registry::new()
            .with(Slot::from(SLOT), EstimateTap::new(tx, 100_000.0, 5e6))
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
