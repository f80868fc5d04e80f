//! Two nodes, A and B, joined by one vif and one pair of SAs, plus packet builders.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use iipnic_firmware::control::{HexKey, NodeConfig, NodeSettings};
use iipnic_firmware::esp::{Algorithm, IcvLen};
use iipnic_firmware::fib::{NextHop, Route, RouteTarget};
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::sad::{Lifetime, SaConfig, SaDirection, SaId};
use iipnic_firmware::spd::{Action, Direction, Selector, SpdEntry, SpdEntryId};
use iipnic_firmware::vif::{VifConfig, VifId};
use iipnic_firmware::wire::{checksum, ipv4, ipv6, proto};
use iipnic_firmware::{Disposition, NativePolicy, Node, NodeLimits, PacketBuf, Port};

pub const KEY_A_TO_B: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa0a1a2a3";
pub const KEY_B_TO_A: &str =
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fb0b1b2b3";
pub const SPI_A_TO_B: u32 = 0x1001;
pub const SPI_B_TO_A: u32 = 0x2002;

/// How the pair is built.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub outer_v6: bool,
    pub algorithm: Algorithm,
    pub icv: IcvLen,
    pub esn: bool,
    pub key_bytes: usize,
    pub vif_mtu: u16,
    pub underlay_mtu: u16,
    pub replay_window: u32,
    pub lifetime: Lifetime,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            outer_v6: false,
            algorithm: Algorithm::AesGcm,
            icv: IcvLen::Sixteen,
            esn: false,
            key_bytes: 16,
            vif_mtu: 1400,
            underlay_mtu: 1500,
            replay_window: 64,
            lifetime: Lifetime::default(),
        }
    }
}

pub fn underlay(options: &Options, node: u8) -> IpAddr {
    if options.outer_v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(node)))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, node))
    }
}

/// VN addresses: hosts behind node 1 are 10.1.0.0/16 and fd00:1::/48, behind node 2 ...
pub fn host_v4(node: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, node, 0, host)
}

pub fn host_v6(node: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, u16::from(node), 0, 0, 0, 0, 0, host)
}

pub fn key(hex: &str, bytes: usize) -> HexKey {
    // AES key of the requested length, then the 4-byte salt (the last 8 hex digits).
    let (k, salt) = hex.split_at(hex.len() - 8);
    HexKey::from_hex(&format!("{}{salt}", &k[..bytes * 2])).unwrap()
}

pub fn node_config(options: &Options, me: u8, peer: u8) -> NodeConfig {
    let local = underlay(options, me);
    let remote = underlay(options, peer);
    let out_key = if me == 1 { KEY_A_TO_B } else { KEY_B_TO_A };
    let in_key = if me == 1 { KEY_B_TO_A } else { KEY_A_TO_B };
    let (out_spi, in_spi) = if me == 1 {
        (SPI_A_TO_B, SPI_B_TO_A)
    } else {
        (SPI_B_TO_A, SPI_A_TO_B)
    };
    let route = |prefix: &str, target: RouteTarget| Route {
        prefix: prefix.parse().unwrap(),
        target,
    };
    let via_vif = || RouteTarget::Vif {
        next_hops: vec![NextHop {
            vif: VifId(1),
            metric: 0,
            weight: 1,
        }],
    };
    let sa = |id, direction, spi, key_hex: &str, src, dst| SaConfig {
        id: SaId(id),
        direction,
        spi,
        algorithm: options.algorithm,
        key: key(key_hex, options.key_bytes),
        icv_len: options.icv,
        esn: options.esn,
        replay_window: options.replay_window,
        src,
        dst,
        protocol: None,
        lifetime: options.lifetime,
    };
    let spd = |id, direction, src, dst, sa| SpdEntry {
        id: SpdEntryId(id),
        direction,
        selector: Selector {
            src: iipnic_firmware::prefix::IpPrefix::host(src),
            dst: iipnic_firmware::prefix::IpPrefix::host(dst),
            protocol: None,
        },
        action: Action::Protect { sa },
    };
    NodeConfig {
        settings: NodeSettings {
            underlay: vec![local],
            underlay_mtu: options.underlay_mtu,
            icmp_source_v4: Some(Ipv4Addr::new(10, me, 255, 254)),
            icmp_source_v6: Some(host_v6(me, 0xfffe)),
        },
        vifs: vec![VifConfig {
            id: VifId(1),
            name: "peer".into(),
            local,
            remote,
            mtu: options.vif_mtu,
            ttl: 64,
            dscp: Default::default(),
            df: Default::default(),
            urpf: Default::default(),
            up: true,
        }],
        routes: vec![
            route(&format!("10.{me}.0.0/16"), RouteTarget::Host),
            route(&format!("fd00:{me}::/48"), RouteTarget::Host),
            route(&format!("10.{peer}.0.0/16"), via_vif()),
            route(&format!("fd00:{peer}::/48"), via_vif()),
        ],
        spd: vec![
            spd(1, Direction::Outbound, local, remote, Some(SaId(1))),
            spd(2, Direction::Inbound, remote, local, None),
        ],
        sas: vec![
            sa(1, SaDirection::Outbound, out_spi, out_key, local, remote),
            sa(2, SaDirection::Inbound, in_spi, in_key, remote, local),
        ],
    }
}

pub fn pair(options: &Options) -> (Node<NativePolicy>, Node<NativePolicy>) {
    let limits = NodeLimits::default();
    let a = Node::new(&node_config(options, 1, 2), NativePolicy, limits, 0).unwrap();
    let b = Node::new(&node_config(options, 2, 1), NativePolicy, limits, 0).unwrap();
    (a, b)
}

/// Everything a node emitted for one input packet.
pub type Emitted = Vec<(Port, Vec<u8>)>;

pub fn from_host(node: &mut Node<NativePolicy>, packet: &[u8]) -> (Disposition, Emitted) {
    let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM + 64];
    let mut pkt = PacketBuf::copy_from(&mut buf, packet).unwrap();
    let mut out = Vec::new();
    let d = node.from_host(&mut pkt, 0, &mut |port: Port, p: &[u8]| {
        out.push((port, p.to_vec()))
    });
    (d, out)
}

pub fn from_underlay_at(
    node: &mut Node<NativePolicy>,
    packet: &[u8],
    now_ms: u64,
) -> (Disposition, Emitted) {
    let mut buf = vec![0u8; HEADROOM + packet.len().max(9300) + TAILROOM];
    let mut pkt = PacketBuf::copy_from(&mut buf, packet).unwrap();
    let mut out = Vec::new();
    let d = node.from_underlay(&mut pkt, now_ms, &mut |port: Port, p: &[u8]| {
        out.push((port, p.to_vec()))
    });
    (d, out)
}

pub fn from_underlay(node: &mut Node<NativePolicy>, packet: &[u8]) -> (Disposition, Emitted) {
    from_underlay_at(node, packet, 0)
}

/// The one underlay packet A sends for `inner`.
pub fn encrypt(a: &mut Node<NativePolicy>, inner: &[u8]) -> Vec<u8> {
    let (d, out) = from_host(a, inner);
    assert_eq!(d, Disposition::Sent(Port::Underlay), "outbound: {d:?}");
    assert_eq!(out.len(), 1);
    out.into_iter().next().unwrap().1
}

/// An IPv4 or IPv6 UDP packet of exactly `total_len` bytes (header only when too short).
pub fn udp(src: IpAddr, dst: IpAddr, total_len: usize, tos: u8, df: bool) -> Vec<u8> {
    let mut p = vec![0u8; total_len];
    let (header_len, protocol) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let protocol = if total_len >= 28 {
                proto::UDP
            } else {
                proto::NO_NEXT_HEADER
            };
            ipv4::Repr {
                src: s,
                dst: d,
                protocol,
                payload_len: total_len - 20,
                ttl: 64,
                tos,
                ident: 0x1234,
                dont_frag: df,
            }
            .emit(&mut p)
            .unwrap();
            (20, protocol)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let protocol = if total_len >= 48 {
                proto::UDP
            } else {
                proto::NO_NEXT_HEADER
            };
            ipv6::Repr {
                src: s,
                dst: d,
                next_header: protocol,
                payload_len: total_len - 40,
                hop_limit: 64,
                traffic_class: tos,
                flow_label: 7,
            }
            .emit(&mut p)
            .unwrap();
            (40, protocol)
        }
        _ => panic!("mixed families"),
    };
    if protocol == proto::UDP {
        let udp_len = (total_len - header_len) as u16;
        p[header_len..header_len + 2].copy_from_slice(&4000u16.to_be_bytes());
        p[header_len + 2..header_len + 4].copy_from_slice(&5000u16.to_be_bytes());
        p[header_len + 4..header_len + 6].copy_from_slice(&udp_len.to_be_bytes());
        for (i, b) in p[header_len + 8..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
    }
    p
}

pub fn v4(node: u8, host: u8) -> IpAddr {
    IpAddr::V4(host_v4(node, host))
}

pub fn v6(node: u8, host: u16) -> IpAddr {
    IpAddr::V6(host_v6(node, host))
}

/// Rewrites an IPv4 header checksum after a test edited the header.
pub fn fix_ipv4_checksum(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    packet[10..12].fill(0);
    let sum = checksum::checksum(&packet[..header_len]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}
