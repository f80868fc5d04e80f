//! Zero-copy views of the headers the fast path reads and writes.
//!
//! Each protocol follows the same shape (the one smoltcp's `wire` module made familiar):
//! a `Packet<T: AsRef<[u8]>>` view whose checked constructor validates every length the
//! accessors rely on, so that no accessor can panic afterwards, and a `Repr` that parses the
//! fields the pipeline needs and emits a fresh header.

pub mod checksum;
pub mod esp;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;

/// Why a header view could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the header (or the length it announces) does.
    Truncated,
    /// A field holds a value the protocol does not allow (version, header length, ...).
    Malformed,
    /// The IPv4 header checksum does not verify.
    BadChecksum,
}

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers") the node cares about.
pub mod proto {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// IPv4 encapsulated in IP (RFC 2003): the IIPtran next header for IPv4 inner packets.
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulated in IP (RFC 2473 / RFC 4213): the IIPtran next header for IPv6 inner.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload (RFC 4303).
    pub const ESP: u8 = 50;
    /// Authentication Header (RFC 4302).
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// "No next header": an ESP dummy packet (RFC 4303 section 2.6).
    pub const NO_NEXT_HEADER: u8 = 59;
    /// IPv6 destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// Reads a big-endian u16 at `at`; callers have checked the bounds in their constructor.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Reads a big-endian u32 at `at`; callers have checked the bounds in their constructor.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Writes a big-endian u16 at `at`; out-of-bounds writes are ignored (constructors prevent them).
#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = buf.get_mut(at..at + 2) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes a big-endian u32 at `at`; out-of-bounds writes are ignored (constructors prevent them).
#[inline]
pub(crate) fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Reads one byte; out of bounds reads as zero (constructors prevent them).
#[inline]
pub(crate) fn read_u8(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

/// Writes one byte; out-of-bounds writes are ignored (constructors prevent them).
#[inline]
pub(crate) fn write_u8(buf: &mut [u8], at: usize, value: u8) {
    if let Some(b) = buf.get_mut(at) {
        *b = value;
    }
}

/// Copies `N` bytes starting at `at` into an array (zeros if out of bounds).
#[inline]
pub(crate) fn read_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}
