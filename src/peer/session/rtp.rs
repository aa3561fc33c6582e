//! RTP timing for one sender, pure: the timestamp of an access unit from its capture
//! PTS and the sender's sequence numbers (RFC 3550 §5.1).

use std::time::Duration;

/// Stamps one RTP stream: `timestamp = base + PTS × clock rate` (mod 2^32) and one
/// sequence number per packet (mod 2^16), both starting at random offsets as RFC 3550
/// §5.1 asks.
///
/// The timestamp is a function of the PTS alone, never of how many frames were sent:
/// dropped frames (a slow viewer resynced at the next IDR), PTS gaps and capture
/// restarts (the supervisor keeps PTS continuous across them) all leave the timestamp
/// where the sampling instant says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpClock {
    clock_rate: u32,
    base: u32,
    next_seq: u16,
}

impl RtpClock {
    /// A stream of `clock_rate` Hz (90 000 for video, 48 000 for Opus) whose PTS 0
    /// maps to timestamp `base` and whose first packet has sequence number `first_seq`.
    pub fn new(clock_rate: u32, base: u32, first_seq: u16) -> Self {
        Self {
            clock_rate,
            base,
            next_seq: first_seq,
        }
    }

    /// The RTP timestamp of an access unit captured at `pts` (ticks of the clock rate,
    /// rounded down, wrapping modulo 2^32).
    pub fn timestamp(&self, pts: Duration) -> u32 {
        let ticks = pts.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        // Modulo 2^32 is the RTP timestamp space; the cast keeps exactly those bits.
        self.base.wrapping_add((ticks % (1u128 << 32)) as u32)
    }

    /// The sequence number for the next packet (wrapping modulo 2^16).
    pub fn next_sequence(&mut self) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::RtpClock;
    use std::time::Duration;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn timestamp_follows_pts_at_the_clock_rate() {
        let c = RtpClock::new(90_000, 1_000, 0);
        assert_eq!(c.timestamp(Duration::ZERO), 1_000);
        assert_eq!(c.timestamp(MS(1_000)), 91_000);
        // 30 fps: 3 000 ticks per frame; 1/30 s is 33 333 333 ns, rounded down.
        assert_eq!(c.timestamp(Duration::from_nanos(33_333_333)), 1_000 + 2_999);
        let opus = RtpClock::new(48_000, 0, 0);
        assert_eq!(opus.timestamp(MS(20)), 960);
    }

    #[test]
    fn timestamp_wraps_modulo_2_pow_32() {
        let c = RtpClock::new(90_000, u32::MAX - 100, 0);
        assert_eq!(c.timestamp(Duration::ZERO), u32::MAX - 100);
        // 101 ticks later the 32-bit timestamp has wrapped to 0.
        let t = Duration::from_nanos(101 * 1_000_000_000 / 90_000 + 1);
        assert_eq!(c.timestamp(t), 0);
        // A camera that runs for days: 2^32 ticks at 90 kHz is ~13.25 h.
        let day = Duration::from_secs(86_400);
        let ticks = 86_400u64 * 90_000;
        assert_eq!(
            c.timestamp(day),
            (u32::MAX - 100).wrapping_add((ticks % (1 << 32)) as u32)
        );
    }

    #[test]
    fn dropped_frames_and_pts_gaps_do_not_shift_later_timestamps() {
        let c = RtpClock::new(90_000, 7, 0);
        // Frames 0..10 at 30 fps; a viewer that only got frames 0 and 9 (the rest
        // dropped) stamps frame 9 exactly where one that got all of them does.
        let frame = |n: u64| Duration::from_nanos(n * 1_000_000_000 / 30);
        assert_eq!(c.timestamp(frame(9)), 7 + 27_000);
        // A capture restart keeps PTS continuous with a gap (the supervisor's offset):
        // the timestamp jumps by the gap and stays monotonic.
        let before = c.timestamp(MS(5_000));
        let after = c.timestamp(MS(5_000 + 1_500));
        assert_eq!(after.wrapping_sub(before), 135_000);
    }

    #[test]
    fn sequence_numbers_count_packets_and_wrap() {
        let mut c = RtpClock::new(90_000, 0, u16::MAX - 1);
        let seqs: Vec<u16> = (0..4).map(|_| c.next_sequence()).collect();
        assert_eq!(seqs, [u16::MAX - 1, u16::MAX, 0, 1]);
    }
}
