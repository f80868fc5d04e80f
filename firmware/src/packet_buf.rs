//! A packet inside a caller-owned buffer, with room in front and behind so that headers
//! and trailers are added in place.

/// Headroom the pipelines need in front of a VN packet: an IPv6 outer header (40) plus
/// the ESP header and IV (16), rounded up.
pub const HEADROOM: usize = 64;
/// Tailroom the pipelines need behind a VN packet: padding (3), pad length and next header
/// (2) and a 16-byte ICV, rounded up.
pub const TAILROOM: usize = 32;

/// A window `[start, end)` over a buffer.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<'a> PacketBuf<'a> {
    /// The packet occupies `buf[start..start + len]`; `None` if that is out of bounds.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= buf.len()).then_some(PacketBuf { buf, start, end })
    }

    /// Copies `packet` into `buf` after [`HEADROOM`] bytes; `None` if it does not fit.
    pub fn copy_from(buf: &'a mut [u8], packet: &[u8]) -> Option<Self> {
        let end = HEADROOM.checked_add(packet.len())?;
        buf.get_mut(HEADROOM..end)?.copy_from_slice(packet);
        Some(PacketBuf {
            buf,
            start: HEADROOM,
            end,
        })
    }

    /// The packet bytes.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// The packet bytes, mutably.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.start..self.end).unwrap_or_default()
    }

    /// Packet length.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for an empty window.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free bytes in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Free bytes behind the packet.
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Grows the packet at the front by `n` bytes and returns them.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let start = self.start.checked_sub(n)?;
        self.start = start;
        self.buf.get_mut(start..start + n)
    }

    /// Grows the packet at the back by `n` bytes and returns them.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let end = self.end.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let old = self.end;
        self.end = end;
        self.buf.get_mut(old..end)
    }

    /// Drops `n` bytes from the front; false (and no change) if the packet is shorter.
    pub fn trim_front(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.start += n;
        true
    }

    /// Keeps only the first `len` bytes (no change if the packet is already shorter).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }

    /// Replaces the packet with a copy of `bytes`, placed after [`HEADROOM`].
    pub fn replace_with(&mut self, bytes: &[u8]) -> bool {
        let end = HEADROOM + bytes.len();
        match self.buf.get_mut(HEADROOM..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.start = HEADROOM;
                self.end = end;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_and_shrink() {
        let mut raw = [0u8; 128];
        let mut p = PacketBuf::copy_from(&mut raw, b"inner").unwrap();
        p.prepend(4).unwrap().copy_from_slice(b"hdr:");
        p.append(2).unwrap().copy_from_slice(b"!!");
        assert_eq!(p.data(), b"hdr:inner!!");
        assert!(p.trim_front(4));
        p.truncate(5);
        assert_eq!(p.data(), b"inner");
        assert!(p.prepend(HEADROOM + 1).is_none());
        assert!(p.append(1000).is_none());
        assert!(!p.trim_front(6));
    }
}
