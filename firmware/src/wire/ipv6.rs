//! IPv6 header view (RFC 8200) with extension-header walking.

use core::net::Ipv6Addr;

use super::{WireError, proto, read_array, read_u8, read_u16, read_u32, write_u16, write_u32};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

const VER_TC_FLOW: usize = 0;
const PAYLOAD_LEN: usize = 4;
const NEXT_HEADER: usize = 6;
const HOP_LIMIT: usize = 7;
const SRC: usize = 8;
const DST: usize = 24;

/// Extension headers followed before giving up; bounds the work a hostile chain can cause.
const MAX_EXTENSION_HEADERS: usize = 8;

/// A read/write view of an IPv6 packet whose lengths have been validated.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the upper-layer header starts, found by walking the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (or the first header the walk does not skip).
    pub protocol: u8,
    /// Offset of that header from the start of the IPv6 header.
    pub offset: usize,
    /// Present when a fragment header was crossed.
    pub fragment: Option<FragmentHeader>,
}

/// The fields of an IPv6 fragment header (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Offset of the fragment header itself from the start of the IPv6 header.
    pub header_offset: usize,
    /// Fragment offset in bytes.
    pub frag_offset: usize,
    /// M flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` after checking the version and that the payload length fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u8(data, VER_TC_FLOW) >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        if HEADER_LEN + usize::from(read_u16(data, PAYLOAD_LEN)) > data.len() {
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

    /// Traffic class: DSCP in the top six bits, ECN in the bottom two.
    pub fn traffic_class(&self) -> u8 {
        ((read_u32(self.data(), VER_TC_FLOW) >> 20) & 0xff) as u8
    }

    /// Explicit Congestion Notification field.
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        read_u32(self.data(), VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (everything after the fixed header).
    pub fn payload_len(&self) -> usize {
        usize::from(read_u16(self.data(), PAYLOAD_LEN))
    }

    /// Fixed header plus payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        read_u8(self.data(), NEXT_HEADER)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        read_u8(self.data(), HOP_LIMIT)
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.data(), SRC))
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.data(), DST))
    }

    /// The 40-byte fixed header.
    pub fn fixed_header(&self) -> &[u8] {
        self.data().get(..HEADER_LEN).unwrap_or_default()
    }

    /// Everything after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        self.data()
            .get(HEADER_LEN..self.total_len())
            .unwrap_or_default()
    }

    /// Skips hop-by-hop, routing, destination-options, fragment and AH headers and reports
    /// where the first other header starts. A chain longer than eight headers, or one that
    /// runs past the payload, is malformed.
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        let data = self.data().get(..self.total_len()).unwrap_or_default();
        let mut protocol = self.next_header();
        let mut offset = HEADER_LEN;
        let mut fragment = None;
        for _ in 0..MAX_EXTENSION_HEADERS {
            let len = match protocol {
                proto::HOP_BY_HOP | proto::ROUTING | proto::DEST_OPTS => {
                    let hdr_ext_len = data.get(offset + 1).ok_or(WireError::Truncated)?;
                    (usize::from(*hdr_ext_len) + 1) * 8
                }
                proto::FRAGMENT => {
                    if offset + 8 > data.len() {
                        return Err(WireError::Truncated);
                    }
                    let off_flags = read_u16(data, offset + 2);
                    fragment = Some(FragmentHeader {
                        header_offset: offset,
                        frag_offset: usize::from(off_flags & 0xfff8),
                        more_frags: off_flags & 1 != 0,
                        ident: read_u32(data, offset + 4),
                    });
                    8
                }
                proto::AH => {
                    let payload_len = data.get(offset + 1).ok_or(WireError::Truncated)?;
                    (usize::from(*payload_len) + 2) * 4
                }
                _ => {
                    return Ok(UpperLayer {
                        protocol,
                        offset,
                        fragment,
                    });
                }
            };
            protocol = *data.get(offset).ok_or(WireError::Truncated)?;
            offset += len;
            if offset > data.len() {
                return Err(WireError::Truncated);
            }
            // Only the first fragment carries the headers after the fragment header.
            if fragment.is_some_and(|f| f.frag_offset != 0) {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                });
            }
        }
        Err(WireError::Malformed)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the traffic class (DSCP and ECN).
    pub fn set_traffic_class(&mut self, tc: u8) {
        let word = read_u32(self.data(), VER_TC_FLOW);
        let word = (word & 0xf00f_ffff) | (u32::from(tc) << 20);
        write_u32(self.data_mut(), VER_TC_FLOW, word);
    }

    /// Sets the ECN bits and leaves DSCP alone.
    pub fn set_ecn(&mut self, ecn: u8) {
        let tc = (self.traffic_class() & !0x03) | (ecn & 0x03);
        self.set_traffic_class(tc);
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        if let Some(b) = self.data_mut().get_mut(HOP_LIMIT) {
            *b = hop_limit;
        }
    }

    /// Sets the next header of the fixed header.
    pub fn set_next_header(&mut self, next_header: u8) {
        if let Some(b) = self.data_mut().get_mut(NEXT_HEADER) {
            *b = next_header;
        }
    }

    /// Sets the payload length. The caller keeps it within the buffer.
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.data_mut(), PAYLOAD_LEN, len);
    }
}

/// The fields of a fixed IPv6 header this node builds (no extension headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
}

impl Repr {
    /// Reads the fields of a validated packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            src: packet.src(),
            dst: packet.dst(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        }
    }

    /// Writes the 40-byte fixed header into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| WireError::Malformed)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xfffff);
        write_u32(header, VER_TC_FLOW, word);
        write_u16(header, PAYLOAD_LEN, payload_len);
        header[NEXT_HEADER] = self.next_header;
        header[HOP_LIMIT] = self.hop_limit;
        header[SRC..SRC + 16].copy_from_slice(&self.src.octets());
        header[DST..DST + 16].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload_len: u16) -> [u8; 40] {
        let repr = Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header: next,
            payload_len: usize::from(payload_len),
            hop_limit: 64,
            traffic_class: 0xb9,
            flow_label: 0x12345,
        };
        let mut out = [0u8; 40];
        repr.emit(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_fixed_header() {
        let mut buf = [0u8; 48];
        buf[..40].copy_from_slice(&header(proto::ESP, 8));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb9);
        assert_eq!(p.ecn(), 1);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.upper_layer().unwrap().protocol, proto::ESP);
        assert_eq!(p.upper_layer().unwrap().offset, 40);
    }

    #[test]
    fn skips_extension_headers_and_reads_fragment() {
        // Hop-by-hop (8 bytes) -> fragment (8 bytes) -> ESP.
        let mut buf = [0u8; 40 + 16 + 8];
        buf[..40].copy_from_slice(&header(proto::HOP_BY_HOP, 24));
        buf[40] = proto::FRAGMENT;
        buf[41] = 0;
        buf[48] = proto::ESP;
        buf[50..52].copy_from_slice(&0x0001u16.to_be_bytes()); // offset 0, M=1
        buf[52..56].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
        let p = Packet::new_checked(&buf[..]).unwrap();
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, proto::ESP);
        assert_eq!(ul.offset, 56);
        let frag = ul.fragment.unwrap();
        assert!(frag.more_frags);
        assert_eq!(frag.ident, 0xdeadbeef);
        assert_eq!(frag.header_offset, 48);
    }

    #[test]
    fn endless_chain_is_malformed_not_a_hang() {
        let mut buf = [0u8; 40 + 9 * 8];
        buf[..40].copy_from_slice(&header(proto::DEST_OPTS, 72));
        for i in 0..9 {
            buf[40 + i * 8] = proto::DEST_OPTS;
        }
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(WireError::Malformed));
    }

    #[test]
    fn truncated_payload_is_rejected() {
        let buf = header(proto::ESP, 100);
        assert_eq!(
            Packet::new_checked(&buf[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
