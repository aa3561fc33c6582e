//! The capture-time stamp for glass-to-glass latency (pure): the wall-clock
//! milliseconds at capture, painted into the test pattern as a row of black and white
//! blocks that survive scaling and compression, and read back by a viewer (the test
//! driver reads it from a canvas at each `requestVideoFrameCallback`; `read` here is
//! the same rule, for tests).
//!
//! Layout: [`BITS`] blocks across the full width, each `width / BITS` pixels wide, in a
//! strip `height / STRIP_DIVISOR` pixels tall at the top; block `i` is white for bit
//! `BITS − 1 − i` of `ms mod 2^32` set (most significant bit first). Only the luma (Y)
//! plane is painted: chroma is left as it is, so the blocks read the same in any
//! colour.

/// Bits stamped: milliseconds modulo 2^32 (49.7 days), compared modulo 2^32.
pub const BITS: usize = 32;
/// The strip is `height / STRIP_DIVISOR` pixels tall (40 px at 720p, 20 at 360p).
pub const STRIP_DIVISOR: usize = 18;
/// Luma of a white block and of a black one (limited range, BT.601).
pub const WHITE: u8 = 235;
/// Luma of a black block.
pub const BLACK: u8 = 16;

/// Paints `ms` into a luma plane of `width`x`height` pixels with `stride` bytes per row.
/// Does nothing for a plane too small to hold the strip (narrower than [`BITS`] pixels
/// or shorter than [`STRIP_DIVISOR`] rows) or shorter than its claimed size.
pub fn paint(y: &mut [u8], stride: usize, (width, height): (usize, usize), ms: u32) {
    let (block, strip) = (width / BITS, height / STRIP_DIVISOR);
    if block == 0 || strip == 0 || stride < width || y.len() < stride * strip {
        return;
    }
    for row in y.chunks_mut(stride).take(strip) {
        for (i, px) in row[..block * BITS].chunks_mut(block).enumerate() {
            let bit = (ms >> (BITS - 1 - i)) & 1;
            px.fill(if bit == 1 { WHITE } else { BLACK });
        }
    }
}

/// Reads a stamp back from a luma plane: the middle pixel of each block, white above
/// the midpoint. `None` for a plane too small to hold one.
pub fn read(y: &[u8], stride: usize, (width, height): (usize, usize)) -> Option<u32> {
    let (block, strip) = (width / BITS, height / STRIP_DIVISOR);
    if block == 0 || strip == 0 {
        return None;
    }
    let row = y.get((strip / 2) * stride..)?;
    (0..BITS).try_fold(0u32, |acc, i| {
        let luma = *row.get(i * block + block / 2)?;
        let mid = (u16::from(WHITE) + u16::from(BLACK)) / 2;
        Some((acc << 1) | u32::from(u16::from(luma) > mid))
    })
}

/// `now_ms − stamp` modulo 2^32, as a signed difference (ms): how long ago a frame
/// stamped `stamp` was captured, on the same clock.
pub fn age_ms(now_ms: u32, stamp: u32) -> i64 {
    i64::from(now_ms.wrapping_sub(stamp) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_at_any_size_and_after_noise() {
        for (w, h, stride) in [(1280, 720, 1280), (640, 360, 640), (320, 240, 384)] {
            let mut y = vec![128u8; stride * h];
            for ms in [0u32, 1, 0x8000_0001, 1_764_547_200_123u64 as u32, u32::MAX] {
                paint(&mut y, stride, (w, h), ms);
                assert_eq!(read(&y, stride, (w, h)), Some(ms), "{w}x{h} {ms}");
                // Compression noise of 60 towards the middle leaves every block on its side.
                let shifted: Vec<u8> = y
                    .iter()
                    .map(|&v| if v > 128 { v - 60 } else { v + 60 })
                    .collect();
                assert_eq!(read(&shifted, stride, (w, h)), Some(ms));
            }
        }
    }

    #[test]
    fn the_strip_stays_at_the_top_and_small_planes_are_left_alone() {
        let (w, h) = (640, 360);
        let mut y = vec![77u8; w * h];
        paint(&mut y, w, (w, h), 0xFFFF_FFFF);
        let strip = h / STRIP_DIVISOR;
        assert!(y[..w * strip].iter().all(|&v| v == WHITE));
        assert!(
            y[w * strip..].iter().all(|&v| v == 77),
            "below the strip untouched"
        );
        let mut tiny = vec![1u8; 16 * 16];
        paint(&mut tiny, 16, (16, 16), 5);
        assert!(tiny.iter().all(|&v| v == 1));
        assert_eq!(read(&tiny, 16, (16, 16)), None);
        // A plane shorter than it claims is not written past its end.
        let mut short = vec![0u8; 10];
        paint(&mut short, 640, (640, 360), 5);
    }

    #[test]
    fn age_is_a_signed_difference_modulo_2_pow_32() {
        assert_eq!(age_ms(1000, 900), 100);
        assert_eq!(age_ms(5, u32::MAX - 4), 10, "across the wrap");
        assert_eq!(age_ms(900, 1000), -100);
    }
}
