//! Offline replay: runs the packets of a pcap through the nodes of a network file and
//! records everything the nodes emit (underlay, host side and punt port alike).

use std::collections::BTreeMap;
use std::net::IpAddr;

use iipnic_firmware::fib::RouteTarget;
use iipnic_firmware::node::CounterSnapshot;
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::{Disposition, NativePolicy, Node, PacketBuf, Port};
use serde::Serialize;

use crate::pcap::Record;

/// Which side of the nodes the input packets arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Underlay packets if their destination is a node's underlay address, else VN packets.
    Auto,
    /// Underlay (tunnel) packets, given to the node owning the outer destination.
    Inbound,
    /// VN packets from a host, given to the node whose host-side routes hold the source.
    Outbound,
}

/// One packet a node emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Index of the emitting node.
    pub node: usize,
    /// Port it went out on.
    pub port: Port,
    /// Capture time of the input packet that caused it.
    pub timestamp_us: u64,
    /// The IP packet.
    pub packet: Vec<u8>,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Input packets.
    pub packets: usize,
    /// Input packets no node owned.
    pub unowned: usize,
    /// Emitted packets per port.
    pub emitted: BTreeMap<Port, usize>,
    /// Counters of each node after the run.
    pub nodes: BTreeMap<String, CounterSnapshot>,
}

/// Runs `records` through `nodes` (named by `names`). Node time is the capture time
/// relative to the first packet.
pub fn replay(
    nodes: &mut [Node<NativePolicy>],
    names: &[String],
    records: &[Record],
    direction: Direction,
) -> (Report, Vec<Emitted>) {
    let mut buffer = vec![0u8; HEADROOM + 65_535 + TAILROOM];
    let mut emitted = Vec::new();
    let mut unowned = 0;
    let start_us = records.first().map_or(0, |r| r.timestamp_us);
    for record in records {
        let now_ms = record.timestamp_us.saturating_sub(start_us) / 1000;
        let Some((index, inbound)) = owner(nodes, &record.packet, direction) else {
            unowned += 1;
            continue;
        };
        let Some(mut pkt) = PacketBuf::copy_from(&mut buffer, &record.packet) else {
            unowned += 1;
            continue;
        };
        let mut tx = |port: Port, packet: &[u8]| {
            emitted.push(Emitted {
                node: index,
                port,
                timestamp_us: record.timestamp_us,
                packet: packet.to_vec(),
            });
        };
        let node = &mut nodes[index];
        let _: Disposition = if inbound {
            node.from_underlay(&mut pkt, now_ms, &mut tx)
        } else {
            node.from_host(&mut pkt, now_ms, &mut tx)
        };
    }
    let mut per_port = BTreeMap::new();
    for e in &emitted {
        *per_port.entry(e.port).or_insert(0) += 1;
    }
    let report = Report {
        packets: records.len(),
        unowned,
        emitted: per_port,
        nodes: names
            .iter()
            .cloned()
            .zip(nodes.iter().map(|n| n.snapshot()))
            .collect(),
    };
    (report, emitted)
}

/// Picks the node for a packet and says whether it is an underlay (inbound) packet.
fn owner(
    nodes: &[Node<NativePolicy>],
    packet: &[u8],
    direction: Direction,
) -> Option<(usize, bool)> {
    let (src, dst) = addresses(packet)?;
    let by_underlay = || {
        nodes
            .iter()
            .position(|n| n.settings().underlay.contains(&dst))
            .map(|i| (i, true))
    };
    let by_host_route = || {
        nodes
            .iter()
            .position(|n| {
                n.fib()
                    .lookup(src)
                    .is_some_and(|r| matches!(r.target, RouteTarget::Host))
            })
            .map(|i| (i, false))
    };
    match direction {
        Direction::Inbound => by_underlay(),
        Direction::Outbound => by_host_route(),
        Direction::Auto => by_underlay().or_else(by_host_route),
    }
}

/// Source and destination of an IPv4 or IPv6 packet.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        _ => None,
    }
}
