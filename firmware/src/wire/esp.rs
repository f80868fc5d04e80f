//! ESP header view (RFC 4303 section 2).
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------------------------------------------------------+
//! |               Security Parameters Index (SPI)                 |
//! |                      Sequence Number                          |
//! |  IV (8 bytes for RFC 4106 / RFC 4543)                         |
//! |  Payload Data ... Padding | Pad Length | Next Header          |
//! |  Integrity Check Value (8, 12 or 16 bytes)                    |
//! +---------------------------------------------------------------+
//! ```
//! The IV and ICV sizes belong to the transform, so this view only knows SPI and sequence.

use super::{WireError, read_u32, write_u32};

/// SPI plus sequence number.
pub const HEADER_LEN: usize = 8;

/// A view of an ESP packet: at least the 8-byte header is present.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` after checking that the SPI and sequence number are present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 0)
    }

    /// Low 32 bits of the sequence number (the only ones on the wire).
    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 4)
    }

    /// Everything after the header: IV, ciphertext, trailer and ICV.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

/// The two fields of an ESP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Security Parameters Index.
    pub spi: u32,
    /// Low 32 bits of the sequence number.
    pub seq: u32,
}

impl Repr {
    /// Writes SPI and sequence number into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        write_u32(header, 0, self.spi);
        write_u32(header, 4, self.seq);
        Ok(())
    }
}

/// Padding for a payload of `len` bytes so that payload, padding and the two trailer bytes
/// end on a 4-byte boundary (RFC 4303 section 2.4; GCM itself needs no block alignment).
pub fn pad_len(len: usize) -> usize {
    (4 - (len + 2) % 4) % 4
}

/// True when padding bytes hold 1, 2, 3, ... as RFC 4303 section 2.4 requires of the default
/// padding scheme; the receiver checks them.
pub fn padding_is_monotonic(padding: &[u8]) -> bool {
    padding
        .iter()
        .enumerate()
        .all(|(i, &b)| usize::from(b) == i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_aligns_trailer_to_four_bytes() {
        for len in 0..64 {
            assert_eq!((len + pad_len(len) + 2) % 4, 0);
            assert!(pad_len(len) < 4);
        }
    }

    #[test]
    fn padding_contents() {
        assert!(padding_is_monotonic(&[]));
        assert!(padding_is_monotonic(&[1, 2, 3]));
        assert!(!padding_is_monotonic(&[0, 0]));
        assert!(!padding_is_monotonic(&[1, 3]));
    }

    #[test]
    fn header_fields() {
        let mut buf = [0u8; 8];
        Repr {
            spi: 0x1001,
            seq: 7,
        }
        .emit(&mut buf)
        .unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.spi(), p.seq()), (0x1001, 7));
        assert!(Packet::new_checked(&buf[..7]).is_err());
    }
}
