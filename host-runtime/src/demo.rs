//! `iipnic demo`: the built-in three-node network emulated with traffic, a policy module
//! hot-swapped, a link cut and healed, and an SA rekeyed under load; then a summary, pcaps,
//! Wireshark keys and a chart. `iipnic demo --linux`: the fast path on the Linux 6.1
//! reference capture (decrypt, decapsulate, answer, refuse a replay and a forgery).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::sad::SaId;
use iipnic_firmware::wire::{checksum, ipv4, proto};
use iipnic_firmware::{Disposition, NativePolicy, Node, PacketBuf, Port};

use iipnic_firmware::policy::wasm::SlotKind;

use crate::config::Network;
use crate::emulator::report::Report;
use crate::emulator::topology::{EventAction, Modules, Rng, ScheduledEvent, Topology};
use crate::emulator::{Emulator, Options};
use crate::pcap;

/// The two Linux peers of the reference capture.
pub const LINUX_PEER_TOML: &str = include_str!("../examples/linux-peer.toml");
/// The reference capture (Linux 6.1, 4 pings A -> B).
pub const LINUX_CAPTURE: &[u8] = include_bytes!("../tests/vectors/linux-6.1/iiptran.pcap");

/// The demo scenario on the default triangle.
pub fn scenario(seed: u64) -> Topology {
    let mut topology = Topology::default_triangle(&mut Rng::new(seed));
    for node in &mut topology.nodes {
        node.modules = Modules {
            spd: Some("spd_rules".into()),
            route: Some("route_lpm_first".into()),
            route_config_hex: None,
        };
    }
    let link = |a: &str, b: &str| [a.to_string(), b.to_string()];
    let at = |at_ms, action| ScheduledEvent { at_ms, action };
    topology.events = vec![
        at(
            1500,
            EventAction::SwapModule {
                node: "A".into(),
                slot: SlotKind::Route,
                module: "route_failover".into(),
            },
        ),
        at(
            3000,
            EventAction::LinkDown {
                link: link("A", "C"),
            },
        ),
        at(
            5000,
            EventAction::Rekey {
                from: "A".into(),
                to: "B".into(),
            },
        ),
        at(
            6500,
            EventAction::LinkUp {
                link: link("A", "C"),
            },
        ),
    ];
    topology
}

/// Runs the emulated demo, writing pcaps, keys, report and chart into `dir`.
pub fn run_network(out: &mut impl Write, dir: &Path, seed: u64) -> Result<Report, String> {
    let io = |e: std::io::Error| e.to_string();
    let options = Options {
        duration_ms: 8000,
        seed,
        pcap_dir: Some(dir.to_path_buf()),
        sample_ms: 100,
    };
    writeln!(
        out,
        "iipnic demo: three IIPtran nodes (A, B, C) in a triangle, 4 flows, 8 s of virtual time\n"
    )
    .map_err(io)?;
    let start = std::time::Instant::now();
    let mut emulator = Emulator::new(scenario(seed), options)?;
    emulator.run(&mut |_| {});
    let report = emulator.finish(start.elapsed())?;
    write!(out, "{}", report.summary()).map_err(io)?;
    let window = |from, to| report.drops_between(from, to);
    writeln!(
        out,
        "\nlost while A swapped its route module (1.5-3.0 s): {}",
        window(1500, 3000)
    )
    .map_err(io)?;
    writeln!(
        out,
        "lost while the A-C link was down and A, C failed over via B (3.0-5.0 s): {}",
        window(3000, 5000)
    )
    .map_err(io)?;
    writeln!(
        out,
        "lost while A rekeyed its SA to B under load (5.0-6.5 s): {}",
        window(5000, 6500)
    )
    .map_err(io)?;
    let chart = dir.join("chart.svg");
    std::fs::write(
        &chart,
        super::emulator::chart::svg(&report, "iipnic demo: delivered throughput and drops"),
    )
    .map_err(io)?;
    let json = dir.join("report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(io)?;
    writeln!(out, "\nwritten to {}:", dir.display()).map_err(io)?;
    writeln!(
        out,
        "  chart.svg (open in a browser), report.json, link-*.pcap, esp_sa (Wireshark keys)"
    )
    .map_err(io)?;
    writeln!(
        out,
        "  decrypt in Wireshark: copy esp_sa to ~/.config/wireshark/, enable ESP decryption; or\n  tshark -r {}/link-A-B.pcap -o esp.enable_encryption_decode:TRUE -o uat:esp_sa:<a line of esp_sa>",
        dir.display()
    )
    .map_err(io)?;
    Ok(report)
}

/// Runs the Linux-capture walkthrough, printing to `out`.
pub fn run_linux(out: &mut impl Write) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let network = Network::parse(
        Path::new("examples/linux-peer.toml"),
        LINUX_PEER_TOML.to_string(),
    )
    .map_err(|e| e.to_string())?;
    let mut nodes = network.build_nodes(0).map_err(|e| e.to_string())?;
    let records = pcap::read(LINUX_CAPTURE).map_err(io)?;

    writeln!(
        out,
        "iipnic demo: RFC 3884 IIPtran between iipnic and Linux 6.1\n"
    )
    .map_err(io)?;
    writeln!(
        out,
        "1. The Linux capture, through our inbound path (SAD, replay, AES-GCM, SPD-I, decap):"
    )
    .map_err(io)?;
    let mut buffer = vec![0u8; HEADROOM + 2048 + TAILROOM];
    for record in &records {
        let Some((_, dst)) = crate::replay::addresses(&record.packet) else {
            continue;
        };
        let Some(index) = nodes
            .iter()
            .position(|n| n.settings().underlay.contains(&dst))
        else {
            continue;
        };
        let name = &network.file.nodes[index].name;
        let mut pkt =
            PacketBuf::copy_from(&mut buffer, &record.packet).ok_or("packet too large")?;
        let mut delivered = None;
        let disposition = nodes[index].from_underlay(&mut pkt, 0, &mut |port: Port, p: &[u8]| {
            delivered = Some((port, p.to_vec()));
        });
        match (disposition, delivered) {
            (Disposition::Sent(Port::Host), Some((_, inner))) => {
                writeln!(
                    out,
                    "   {name} <- ESP seq {:>2}: {}",
                    esp_seq(&record.packet),
                    describe(&inner)
                )
                .map_err(io)?;
            }
            (other, _) => writeln!(out, "   {name} <- {other:?}").map_err(io)?,
        }
    }

    writeln!(
        out,
        "\n2. Our outbound path: A's host pings B (FIB -> IPIP -> SPD-O -> ESP transport):"
    )
    .map_err(io)?;
    let echo = icmp_echo(
        Ipv4Addr::new(10, 99, 0, 1),
        Ipv4Addr::new(10, 99, 0, 2),
        0x4242,
        1,
    );
    let (a, b) = split_pair(&mut nodes)?;
    // A takes over the SA Linux host A used for sequence numbers 1-4.
    if let Some(sa) = a.sad_mut().get_mut(SaId(1)) {
        sa.set_next_seq(5);
    }
    let wire = send(a, &echo, &mut buffer)?;
    writeln!(
        out,
        "   A -> underlay: {} bytes, {} -> {}, ESP SPI {:#x} seq {}",
        wire.len(),
        Ipv4Addr::from(<[u8; 4]>::try_from(&wire[12..16]).map_err(|e| e.to_string())?),
        Ipv4Addr::from(<[u8; 4]>::try_from(&wire[16..20]).map_err(|e| e.to_string())?),
        u32::from_be_bytes([wire[20], wire[21], wire[22], wire[23]]),
        esp_seq(&wire)
    )
    .map_err(io)?;
    let outcome = receive(b, &wire, &mut buffer)?;
    writeln!(out, "   B <- {outcome}").map_err(io)?;

    writeln!(out, "\n3. Attacks on B:").map_err(io)?;
    writeln!(
        out,
        "   the same packet again: {}",
        receive(b, &wire, &mut buffer)?
    )
    .map_err(io)?;
    let mut forged = send(a, &echo, &mut buffer)?;
    if let Some(last) = forged.last_mut() {
        *last ^= 0x01;
    }
    writeln!(
        out,
        "   one ICV bit flipped:   {}",
        receive(b, &forged, &mut buffer)?
    )
    .map_err(io)?;

    writeln!(out, "\n4. Counters:").map_err(io)?;
    for (node, entry) in nodes.iter().zip(&network.file.nodes) {
        let c = node.counters();
        let drops: Vec<String> = c
            .nonzero_drops()
            .map(|(r, n)| format!("{}={n}", r.name()))
            .collect();
        writeln!(
            out,
            "   {}: rx underlay {}, rx host {}, tx underlay {}, tx host {}, drops [{}]",
            entry.name,
            c.rx_underlay,
            c.rx_host,
            c.tx_underlay,
            c.tx_host,
            drops.join(", ")
        )
        .map_err(io)?;
    }
    writeln!(out, "\nNext: `iipnic replay --config host-runtime/examples/linux-peer.toml --in host-runtime/tests/vectors/linux-6.1/iiptran.pcap --out inner.pcap`").map_err(io)?;
    Ok(())
}

fn split_pair(
    nodes: &mut [Node<NativePolicy>],
) -> Result<(&mut Node<NativePolicy>, &mut Node<NativePolicy>), String> {
    match nodes {
        [a, b, ..] => Ok((a, b)),
        _ => Err("the demo network needs two nodes".into()),
    }
}

fn send(
    node: &mut Node<NativePolicy>,
    packet: &[u8],
    buffer: &mut [u8],
) -> Result<Vec<u8>, String> {
    let mut pkt = PacketBuf::copy_from(buffer, packet).ok_or("packet too large")?;
    let mut wire = None;
    let disposition = node.from_host(&mut pkt, 0, &mut |_: Port, p: &[u8]| {
        wire = Some(p.to_vec())
    });
    wire.ok_or_else(|| format!("outbound path did not send: {disposition:?}"))
}

fn receive(
    node: &mut Node<NativePolicy>,
    packet: &[u8],
    buffer: &mut [u8],
) -> Result<String, String> {
    let mut pkt = PacketBuf::copy_from(buffer, packet).ok_or("packet too large")?;
    let mut delivered = None;
    let disposition = node.from_underlay(&mut pkt, 0, &mut |_: Port, p: &[u8]| {
        delivered = Some(p.to_vec())
    });
    Ok(match (disposition, delivered) {
        (Disposition::Sent(port), Some(inner)) => {
            format!("delivered to {port:?}: {}", describe(&inner))
        }
        (Disposition::Dropped(reason), _) => format!("dropped, counted as `{}`", reason.name()),
        (other, _) => format!("{other:?}"),
    })
}

/// An ICMP echo request from `src` to `dst`.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..56u8).map(|i| i.wrapping_add(0x10)));
    let sum = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![0u8; ipv4::HEADER_LEN];
    let repr = ipv4::Repr {
        src,
        dst,
        protocol: proto::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
        tos: 0,
        ident: seq,
        dont_frag: true,
    };
    // 20 bytes were allocated for exactly this header.
    let _ = repr.emit(&mut packet);
    packet.extend_from_slice(&icmp);
    packet
}

fn esp_seq(outer: &[u8]) -> u32 {
    outer
        .get(24..28)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// One line about an inner IPv4 packet.
pub fn describe(packet: &[u8]) -> String {
    match ipv4::Packet::new_checked(packet) {
        Ok(p) if p.protocol() == proto::ICMP && p.payload().len() >= 8 => {
            let icmp = p.payload();
            let kind = match icmp[0] {
                8 => "echo request",
                0 => "echo reply",
                _ => "icmp",
            };
            format!(
                "{} > {} ICMP {kind} id {:#x} seq {} ({} bytes)",
                p.src(),
                p.dst(),
                u16::from_be_bytes([icmp[4], icmp[5]]),
                u16::from_be_bytes([icmp[6], icmp[7]]),
                p.total_len()
            )
        }
        Ok(p) => format!(
            "{} > {} proto {} ({} bytes)",
            p.src(),
            p.dst(),
            p.protocol(),
            p.total_len()
        ),
        Err(_) => format!("{} bytes", packet.len()),
    }
}
