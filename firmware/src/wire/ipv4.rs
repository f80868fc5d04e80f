//! IPv4 header view (RFC 791).

use core::net::Ipv4Addr;

use super::{WireError, checksum, read_array, read_u8, read_u16, write_u8, write_u16};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

const VER_IHL: usize = 0;
const TOS: usize = 1;
const TOTAL_LEN: usize = 2;
const IDENT: usize = 4;
const FLAGS_FRAG: usize = 6;
const TTL: usize = 8;
const PROTOCOL: usize = 9;
const CHECKSUM: usize = 10;
const SRC: usize = 12;
const DST: usize = 16;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet whose lengths have been validated.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` after checking version, header length and total length, so that every
    /// accessor below stays in bounds. The buffer may be longer than the packet (link padding).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let ver_ihl = read_u8(data, VER_IHL);
        let header_len = usize::from(ver_ihl & 0x0f) * 4;
        if ver_ihl >> 4 != 4 || header_len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total_len = usize::from(read_u16(data, TOTAL_LEN));
        if total_len < header_len {
            return Err(WireError::Malformed);
        }
        if total_len > data.len() {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(read_u8(self.data(), VER_IHL) & 0x0f) * 4
    }

    /// The whole type-of-service byte: DSCP in the top six bits, ECN in the bottom two.
    pub fn tos(&self) -> u8 {
        read_u8(self.data(), TOS)
    }

    /// Explicit Congestion Notification field (RFC 3168).
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// Total length from the header: header plus payload.
    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.data(), TOTAL_LEN))
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.data(), IDENT)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.data(), FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.data(), FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(read_u16(self.data(), FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }

    /// True for any piece of a fragmented datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        read_u8(self.data(), TTL)
    }

    /// Next protocol.
    pub fn protocol(&self) -> u8 {
        read_u8(self.data(), PROTOCOL)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.data(), SRC))
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.data(), DST))
    }

    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        self.data()
            .get(..self.header_len())
            .is_some_and(|h| checksum::checksum(h) == 0)
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        self.data().get(..self.header_len()).unwrap_or_default()
    }

    /// The payload, up to the total length (link padding excluded).
    pub fn payload(&self) -> &[u8] {
        self.data()
            .get(self.header_len()..self.total_len())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the type-of-service byte (DSCP and ECN).
    pub fn set_tos(&mut self, tos: u8) {
        write_u8(self.data_mut(), TOS, tos);
    }

    /// Sets the ECN bits and leaves DSCP alone.
    pub fn set_ecn(&mut self, ecn: u8) {
        let tos = (self.tos() & !0x03) | (ecn & 0x03);
        self.set_tos(tos);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        write_u8(self.data_mut(), TTL, ttl);
    }

    /// Sets the next protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        write_u8(self.data_mut(), PROTOCOL, protocol);
    }

    /// Sets the total length. The caller keeps it within the buffer.
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.data_mut(), TOTAL_LEN, len);
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        write_u16(self.data_mut(), CHECKSUM, 0);
        let sum = checksum::checksum(self.header());
        write_u16(self.data_mut(), CHECKSUM, sum);
    }

    /// Mutable payload, up to the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.total_len());
        self.data_mut().get_mut(start..end).unwrap_or_default()
    }
}

/// The fields of an IPv4 header this node builds (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Next protocol.
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Repr {
    /// Reads the fields of a validated packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            src: packet.src(),
            dst: packet.dst(),
            protocol: packet.protocol(),
            payload_len: packet.total_len() - packet.header_len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        }
    }

    /// Writes a 20-byte header with a valid checksum into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total = HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| WireError::Malformed)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        header[VER_IHL] = 0x45;
        header[TOS] = self.tos;
        write_u16(header, TOTAL_LEN, total);
        write_u16(header, IDENT, self.ident);
        write_u16(header, FLAGS_FRAG, if self.dont_frag { FLAG_DF } else { 0 });
        header[TTL] = self.ttl;
        header[PROTOCOL] = self.protocol;
        write_u16(header, CHECKSUM, 0);
        header[SRC..SRC + 4].copy_from_slice(&self.src.octets());
        header[DST..DST + 4].copy_from_slice(&self.dst.octets());
        let sum = checksum::checksum(header);
        write_u16(header, CHECKSUM, sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.99.0.1 -> 10.99.0.2, ICMP, DF, TTL 64, total length 84 (the shape of a ping).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0xa0, 0x5e, 0x0a, 0x63, 0x00,
        0x01, 0x0a, 0x63, 0x00, 0x02,
    ];

    fn packet() -> [u8; 0x54] {
        let mut buf = [0u8; 0x54];
        buf[..20].copy_from_slice(&HEADER);
        buf
    }

    #[test]
    fn parses_fields() {
        let buf = packet();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.src(), Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(p.protocol(), 1);
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert_eq!(p.payload().len(), 0x54 - 20);
    }

    #[test]
    fn emit_matches_parse() {
        let buf = packet();
        let p = Packet::new_checked(&buf[..]).unwrap();
        let repr = Repr::parse(&p);
        let mut out = [0u8; 20];
        repr.emit(&mut out).unwrap();
        let mut copy = [0u8; 0x54];
        copy[..20].copy_from_slice(&out);
        let q = Packet::new_checked(&copy[..]).unwrap();
        assert!(q.verify_checksum());
        assert_eq!(Repr::parse(&q), repr);
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut buf = packet();
        assert_eq!(
            Packet::new_checked(&buf[..19]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&buf[..40]).err(),
            Some(WireError::Truncated)
        );
        buf[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&buf[..]).err(),
            Some(WireError::Malformed)
        );
        buf[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&buf[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
