//! The ICMP and ICMPv6 error messages a tunnel router sends (RFC 792, RFC 1191, RFC 4443).

use core::net::{Ipv4Addr, Ipv6Addr};

use super::{WireError, checksum, ipv4, ipv6, proto, write_u16, write_u32};

/// ICMP header length (type, code, checksum, four bytes of message-specific data).
pub const HEADER_LEN: usize = 8;

/// RFC 1812 section 4.3.2.3: an ICMPv4 error stays within 576 bytes.
pub const MAX_V4_ERROR_LEN: usize = 576;
/// RFC 4443 section 2.4 (c): an ICMPv6 error stays within the minimum MTU.
pub const MAX_V6_ERROR_LEN: usize = 1280;

/// The errors the node generates about an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route to the destination (ICMP 3/0, ICMPv6 1/0).
    NetUnreachable,
    /// The packet does not fit the tunnel: ICMP 3/4 "fragmentation needed" or ICMPv6 2/0
    /// "packet too big", carrying this MTU.
    TooBig {
        /// Largest inner packet the tunnel carries.
        mtu: u16,
    },
    /// TTL or hop limit reached zero in transit (ICMP 11/0, ICMPv6 3/0).
    TimeExceeded,
}

impl ErrorKind {
    fn v4_type_code_rest(self) -> (u8, u8, u32) {
        match self {
            ErrorKind::NetUnreachable => (3, 0, 0),
            ErrorKind::TooBig { mtu } => (3, 4, u32::from(mtu)),
            ErrorKind::TimeExceeded => (11, 0, 0),
        }
    }

    fn v6_type_code_rest(self) -> (u8, u8, u32) {
        match self {
            ErrorKind::NetUnreachable => (1, 0, 0),
            ErrorKind::TooBig { mtu } => (2, 0, u32::from(mtu)),
            ErrorKind::TimeExceeded => (3, 0, 0),
        }
    }
}

/// True when an ICMP/ICMPv6 message of this type is itself an error: no error is ever sent
/// about an error (RFC 1122 3.2.2, RFC 4443 2.4 (e)).
pub fn is_error_type(protocol: u8, icmp_type: u8) -> bool {
    match protocol {
        proto::ICMP => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        proto::ICMPV6 => icmp_type < 128,
        _ => false,
    }
}

/// Builds, at the start of `out`, an IPv4 packet from `src` carrying an ICMP error about
/// `original`, quoting as much of it as fits in 576 bytes. Returns the packet length.
pub fn emit_v4_error(
    out: &mut [u8],
    src: Ipv4Addr,
    original: &[u8],
    kind: ErrorKind,
) -> Result<usize, WireError> {
    let orig = ipv4::Packet::new_checked(original)?;
    let quoted = original
        .len()
        .min(MAX_V4_ERROR_LEN - ipv4::HEADER_LEN - HEADER_LEN);
    let icmp_len = HEADER_LEN + quoted;
    let total = ipv4::HEADER_LEN + icmp_len;
    let (type_, code, rest) = kind.v4_type_code_rest();
    let packet = out.get_mut(..total).ok_or(WireError::Truncated)?;
    let (ip, icmp) = packet.split_at_mut(ipv4::HEADER_LEN);
    // Quote first: `original` may not alias `out`, so this is a plain copy.
    icmp[HEADER_LEN..].copy_from_slice(&original[..quoted]);
    icmp[0] = type_;
    icmp[1] = code;
    write_u16(icmp, 2, 0);
    write_u32(icmp, 4, rest);
    let sum = checksum::checksum(icmp);
    write_u16(icmp, 2, sum);
    ipv4::Repr {
        src,
        dst: orig.src(),
        protocol: proto::ICMP,
        payload_len: icmp_len,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: false,
    }
    .emit(ip)?;
    Ok(total)
}

/// Builds, at the start of `out`, an IPv6 packet from `src` carrying an ICMPv6 error about
/// `original`, quoting as much of it as fits in 1280 bytes. Returns the packet length.
pub fn emit_v6_error(
    out: &mut [u8],
    src: Ipv6Addr,
    original: &[u8],
    kind: ErrorKind,
) -> Result<usize, WireError> {
    let orig = ipv6::Packet::new_checked(original)?;
    let quoted = original
        .len()
        .min(MAX_V6_ERROR_LEN - ipv6::HEADER_LEN - HEADER_LEN);
    let icmp_len = HEADER_LEN + quoted;
    let total = ipv6::HEADER_LEN + icmp_len;
    let (type_, code, rest) = kind.v6_type_code_rest();
    let dst = orig.src();
    let packet = out.get_mut(..total).ok_or(WireError::Truncated)?;
    let (ip, icmp) = packet.split_at_mut(ipv6::HEADER_LEN);
    icmp[HEADER_LEN..].copy_from_slice(&original[..quoted]);
    icmp[0] = type_;
    icmp[1] = code;
    write_u16(icmp, 2, 0);
    write_u32(icmp, 4, rest);
    let pseudo = checksum::ipv6_pseudo_header(&src, &dst, proto::ICMPV6, icmp_len as u32);
    let sum = checksum::finish(checksum::accumulate(pseudo, icmp));
    write_u16(icmp, 2, sum);
    ipv6::Repr {
        src,
        dst,
        next_header: proto::ICMPV6,
        payload_len: icmp_len,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(ip)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_too_big_carries_mtu_and_quotes_original() {
        let mut original = [0u8; 1500];
        ipv4::Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 1, 1),
            protocol: proto::UDP,
            payload_len: 1480,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
        }
        .emit(&mut original)
        .unwrap();
        let mut out = [0u8; 600];
        let len = emit_v4_error(
            &mut out,
            Ipv4Addr::new(10, 0, 0, 254),
            &original,
            ErrorKind::TooBig { mtu: 1400 },
        )
        .unwrap();
        assert_eq!(len, 576);
        let ip = ipv4::Packet::new_checked(&out[..len]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst(), Ipv4Addr::new(10, 0, 0, 1));
        let icmp = ip.payload();
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400);
        assert_eq!(checksum::checksum(icmp), 0);
        assert_eq!(&icmp[8..28], &original[..20]);
    }

    #[test]
    fn v6_packet_too_big_checksum_verifies() {
        let mut original = [0u8; 1400];
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        ipv6::Repr {
            src,
            dst: "2001:db8:1::1".parse().unwrap(),
            next_header: proto::UDP,
            payload_len: 1360,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut original)
        .unwrap();
        let mut out = [0u8; 1400];
        let me: Ipv6Addr = "2001:db8::fe".parse().unwrap();
        let len = emit_v6_error(&mut out, me, &original, ErrorKind::TooBig { mtu: 1280 }).unwrap();
        assert_eq!(len, 1280);
        let ip = ipv6::Packet::new_checked(&out[..len]).unwrap();
        let icmp = ip.payload();
        assert_eq!(icmp[0], 2);
        let pseudo = checksum::ipv6_pseudo_header(&me, &src, proto::ICMPV6, icmp.len() as u32);
        assert_eq!(checksum::finish(checksum::accumulate(pseudo, icmp)), 0);
    }

    #[test]
    fn errors_about_errors_are_recognised() {
        assert!(is_error_type(proto::ICMP, 3));
        assert!(!is_error_type(proto::ICMP, 8));
        assert!(is_error_type(proto::ICMPV6, 2));
        assert!(!is_error_type(proto::ICMPV6, 128));
    }
}
