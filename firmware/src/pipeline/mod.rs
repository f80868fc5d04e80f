//! The two pipelines, in RFC 3884 order. Read [`outbound`] and [`inbound`] top to bottom:
//! one function per step.

pub mod inbound;
pub mod outbound;

use core::net::IpAddr;

use crate::counters::DropReason;
use crate::wire::{icmp, ipv4, ipv6, proto};

/// Where a node sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// The underlay (physical) network: tunnel packets.
    Underlay,
    /// The host side: VN packets for the prefixes this node serves.
    Host,
    /// The host's control plane: IKE, ICMP to the node itself, local VN addresses.
    Punt,
}

/// The ports a node transmits on. Implemented by board drivers, the emulator and tests.
pub trait Tx {
    /// Sends one packet (an IP packet, no link header).
    fn transmit(&mut self, port: Port, packet: &[u8]);
}

impl<F: FnMut(Port, &[u8])> Tx for F {
    fn transmit(&mut self, port: Port, packet: &[u8]) {
        self(port, packet)
    }
}

/// What became of one packet handed to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transmitted on this port.
    Sent(Port),
    /// Not forwarded, counted under this reason.
    Dropped(DropReason),
    /// An outer fragment kept for reassembly.
    Held,
}

/// The facts about a validated VN (inner) packet that forwarding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    /// Length of the packet (link padding excluded).
    pub len: usize,
    /// IPv4 DF; always true for IPv6, which routers never fragment.
    pub dont_frag: bool,
    /// A non-first fragment: ICMP errors are never sent about those.
    pub later_fragment: bool,
    /// The packet is itself an ICMP error: no error is ever sent about it.
    pub is_icmp_error: bool,
    /// Hash of addresses, protocol and ports, for ECMP and the outer IPv6 flow label.
    pub flow_hash: u32,
}

impl InnerHeader {
    /// Validates an IPv4 or IPv6 packet and reads what forwarding needs.
    pub fn parse(packet: &[u8]) -> Result<Self, DropReason> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => Self::parse_v4(packet),
            Some(6) => Self::parse_v6(packet),
            _ => Err(DropReason::Malformed),
        }
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// The IPIP protocol number that carries this packet: 4 or 41.
    pub fn tunnel_protocol(&self) -> u8 {
        if self.is_ipv4() {
            proto::IPIP
        } else {
            proto::IPV6
        }
    }

    fn parse_v4(packet: &[u8]) -> Result<Self, DropReason> {
        let p = ipv4::Packet::new_checked(packet).map_err(|_| DropReason::Malformed)?;
        if !p.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
        let first_fragment = p.frag_offset() == 0;
        let upper = p.payload();
        Ok(InnerHeader {
            src: IpAddr::V4(p.src()),
            dst: IpAddr::V4(p.dst()),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            len: p.total_len(),
            dont_frag: p.dont_frag(),
            later_fragment: !first_fragment,
            is_icmp_error: first_fragment
                && p.protocol() == proto::ICMP
                && upper
                    .first()
                    .is_some_and(|&t| icmp::is_error_type(proto::ICMP, t)),
            flow_hash: flow_hash(
                &p.src().octets(),
                &p.dst().octets(),
                p.protocol(),
                first_fragment.then_some(upper),
            ),
        })
    }

    fn parse_v6(packet: &[u8]) -> Result<Self, DropReason> {
        let p = ipv6::Packet::new_checked(packet).map_err(|_| DropReason::Malformed)?;
        let ul = p.upper_layer().map_err(|_| DropReason::Malformed)?;
        let first_fragment = ul.fragment.is_none_or(|f| f.frag_offset == 0);
        let upper = packet.get(ul.offset..p.total_len()).unwrap_or_default();
        Ok(InnerHeader {
            src: IpAddr::V6(p.src()),
            dst: IpAddr::V6(p.dst()),
            protocol: ul.protocol,
            ttl: p.hop_limit(),
            tos: p.traffic_class(),
            len: p.total_len(),
            dont_frag: true,
            later_fragment: !first_fragment,
            is_icmp_error: first_fragment
                && ul.protocol == proto::ICMPV6
                && upper
                    .first()
                    .is_some_and(|&t| icmp::is_error_type(proto::ICMPV6, t)),
            flow_hash: flow_hash(
                &p.src().octets(),
                &p.dst().octets(),
                ul.protocol,
                first_fragment.then_some(upper),
            ),
        })
    }
}

/// The flow hash of a packet: addresses, protocol, and ports for TCP, UDP and SCTP in a
/// first fragment.
fn flow_hash(src: &[u8], dst: &[u8], protocol: u8, upper: Option<&[u8]>) -> u32 {
    let ports = match protocol {
        proto::TCP | proto::UDP | 132 => upper.and_then(|u| u.get(..4)),
        _ => None,
    };
    crate::hash::tuple_hash(src, dst, protocol, ports)
}

/// RFC 6040 section 4.1 (normal mode): the outer ECN copies the inner, except that CE is
/// not copied (the outer starts as ECT(0)).
pub fn ecn_encapsulate(inner_ecn: u8) -> u8 {
    const CE: u8 = 0b11;
    const ECT0: u8 = 0b10;
    if inner_ecn == CE {
        ECT0
    } else {
        inner_ecn & 0b11
    }
}

/// RFC 6040 section 4.2, figure 4: the inner ECN after decapsulation, or `None` where the
/// table says "drop" (outer CE over a Not-ECT inner).
pub fn ecn_decapsulate(inner_ecn: u8, outer_ecn: u8) -> Option<u8> {
    const NOT_ECT: u8 = 0b00;
    const ECT1: u8 = 0b01;
    const ECT0: u8 = 0b10;
    const CE: u8 = 0b11;
    match (inner_ecn & 0b11, outer_ecn & 0b11) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (ECT0, ECT1) => Some(ECT1),
        (_, CE) => Some(CE),
        (inner, _) => Some(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6040_decapsulation_table() {
        // Rows: inner Not-ECT, ECT(0), ECT(1), CE; columns: outer Not-ECT, ECT(0), ECT(1), CE.
        let table = [
            [Some(0b00), Some(0b00), Some(0b00), None],
            [Some(0b10), Some(0b10), Some(0b01), Some(0b11)],
            [Some(0b01), Some(0b01), Some(0b01), Some(0b11)],
            [Some(0b11), Some(0b11), Some(0b11), Some(0b11)],
        ];
        let codes = [0b00, 0b10, 0b01, 0b11];
        for (i, inner) in codes.iter().enumerate() {
            for (o, outer) in codes.iter().enumerate() {
                assert_eq!(
                    ecn_decapsulate(*inner, *outer),
                    table[i][o],
                    "inner {inner:02b} outer {outer:02b}"
                );
            }
        }
    }

    #[test]
    fn rfc6040_encapsulation() {
        assert_eq!(ecn_encapsulate(0b00), 0b00);
        assert_eq!(ecn_encapsulate(0b01), 0b01);
        assert_eq!(ecn_encapsulate(0b10), 0b10);
        assert_eq!(ecn_encapsulate(0b11), 0b10);
    }
}
