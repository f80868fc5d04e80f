//! Anti-replay window with Extended Sequence Numbers (RFC 4303 section 3.4.3, appendix A).
//!
//! The window is checked before the ICV and updated only after it verifies, so forged
//! packets can neither consume sequence numbers nor move the window.

/// Largest supported window, in packets.
pub const MAX_WINDOW: u32 = 4096;
/// Smallest supported window (RFC 4303 requires 32; 64 is the SHOULD).
pub const MIN_WINDOW: u32 = 32;
/// Default window: large enough for reordering across multi-queue NICs.
pub const DEFAULT_WINDOW: u32 = 1024;

const WORDS: usize = (MAX_WINDOW / 64) as usize;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Already received (a duplicate inside the window).
    Duplicate,
    /// Left of the window: too old to tell.
    TooOld,
    /// Sequence number zero is never sent (counters start at 1, RFC 4303 section 3.3.3).
    Zero,
}

/// The receive-side state of one SA.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest authenticated sequence number (64-bit, high half inferred when ESN is off too).
    top: u64,
    /// Window size W in packets.
    size: u32,
    esn: bool,
    /// Ring of W bits; bit (seq mod W) is set once seq has been received.
    bits: [u64; WORDS],
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .field("size", &self.size)
            .field("esn", &self.esn)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// A window of `size` packets (clamped to 32..=4096) with or without ESN.
    pub fn new(size: u32, esn: bool) -> Self {
        ReplayWindow {
            top: 0,
            size: size.clamp(MIN_WINDOW, MAX_WINDOW),
            esn,
            bits: [0; WORDS],
        }
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Infers the full 64-bit sequence number from the 32 bits on the wire and checks it
    /// against the window. Returns the full number to authenticate with (its high half goes
    /// into the ICV computation) and to pass to [`ReplayWindow::accept`] afterwards.
    pub fn check(&self, seq_low: u32) -> Result<u64, ReplayError> {
        let seq = self.infer(seq_low).ok_or(ReplayError::TooOld)?;
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(seq);
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(ReplayError::TooOld);
        }
        if self.bit(seq) {
            return Err(ReplayError::Duplicate);
        }
        Ok(seq)
    }

    /// Marks `seq` as received, sliding the window if it is new. Call only after the ICV of
    /// the packet carrying `seq` verified.
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= u64::from(self.size) {
                self.bits = [0; WORDS];
            } else {
                for s in self.top + 1..seq {
                    self.set_bit(s, false);
                }
            }
            self.top = seq;
        }
        self.set_bit(seq, true);
    }

    /// RFC 4303 appendix A2.2: choose the high half so that the number lands in, or just
    /// right of, the window. Without ESN the high half is always zero. `None` when the
    /// inferred high half would go below zero (a number before the first one).
    fn infer(&self, seq_low: u32) -> Option<u64> {
        if !self.esn {
            return Some(u64::from(seq_low));
        }
        let w = self.size;
        let top_low = self.top as u32;
        let top_high = (self.top >> 32) as u32;
        let high = if top_low >= w - 1 {
            // Case A: the window sits within one 2^32 block.
            if seq_low >= top_low - (w - 1) {
                Some(top_high)
            } else {
                top_high.checked_add(1)
            }
        } else {
            // Case B: the window straddles the boundary with the previous block.
            if seq_low >= top_low.wrapping_sub(w - 1) {
                top_high.checked_sub(1)
            } else {
                Some(top_high)
            }
        };
        high.map(|h| (u64::from(h) << 32) | u64::from(seq_low))
    }

    fn index(&self, seq: u64) -> (usize, u64) {
        let pos = (seq % u64::from(self.size)) as usize;
        (pos / 64, 1u64 << (pos % 64))
    }

    fn bit(&self, seq: u64) -> bool {
        let (word, mask) = self.index(seq);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }

    fn set_bit(&mut self, seq: u64, on: bool) {
        let (word, mask) = self.index(seq);
        if let Some(w) = self.bits.get_mut(word) {
            if on {
                *w |= mask;
            } else {
                *w &= !mask;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, seq_low: u32) -> Result<u64, ReplayError> {
        let seq = w.check(seq_low)?;
        w.accept(seq);
        Ok(seq)
    }

    #[test]
    fn in_order_then_duplicate() {
        let mut w = ReplayWindow::new(64, false);
        for s in 1..=100 {
            assert_eq!(accept(&mut w, s), Ok(u64::from(s)));
        }
        assert_eq!(w.check(100), Err(ReplayError::Duplicate));
        assert_eq!(w.check(37), Err(ReplayError::Duplicate));
        // Window holds 37..=100; 36 is just left of it.
        assert_eq!(w.check(36), Err(ReplayError::TooOld));
    }

    #[test]
    fn holes_inside_the_window_are_accepted_once() {
        let mut w = ReplayWindow::new(64, false);
        accept(&mut w, 10).unwrap();
        accept(&mut w, 5).unwrap();
        assert_eq!(w.check(5), Err(ReplayError::Duplicate));
        accept(&mut w, 1000).unwrap();
        assert_eq!(w.check(10), Err(ReplayError::TooOld));
        assert_eq!(w.check(999), Ok(999));
        assert_eq!(w.check(0), Err(ReplayError::Zero));
    }

    #[test]
    fn far_right_jump_clears_old_bits() {
        let mut w = ReplayWindow::new(128, false);
        for s in 1..=128 {
            accept(&mut w, s).unwrap();
        }
        accept(&mut w, 128 + 300).unwrap();
        // Every number inside the new window that was never received is accepted.
        for s in 301..428 {
            assert_eq!(w.check(s), Ok(u64::from(s)), "seq {s}");
        }
    }

    #[test]
    fn esn_infers_next_block_after_wrap() {
        let mut w = ReplayWindow::new(64, true);
        // Start near the end of the first 2^32 block (as after 4 billion packets).
        w.accept(u64::from(u32::MAX - 1));
        accept(&mut w, u32::MAX).unwrap();
        // Low half wraps to 3: the sender moved to high half 1.
        assert_eq!(accept(&mut w, 3), Ok((1 << 32) | 3));
        // A late packet from the old block is still inside the window (case B).
        assert_eq!(w.check(u32::MAX - 2), Ok(u64::from(u32::MAX - 2)));
        assert_eq!(w.check(u32::MAX), Err(ReplayError::Duplicate));
    }

    #[test]
    fn esn_number_before_the_first_block_is_too_old() {
        let w = ReplayWindow::new(64, true);
        assert_eq!(w.check(u32::MAX), Err(ReplayError::TooOld));
        assert_eq!(w.check(1), Ok(1));
    }

    #[test]
    fn window_size_is_clamped() {
        assert_eq!(ReplayWindow::new(1, false).size(), MIN_WINDOW);
        assert_eq!(ReplayWindow::new(1 << 20, false).size(), MAX_WINDOW);
    }
}
