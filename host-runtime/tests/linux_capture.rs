//! The Linux 6.1 IIPtran capture (two kernels, ipip + transport-mode XFRM) as a
//! known-answer test of the inbound path, the outbound path's bytes, replay protection
//! and ICV checking. The expected inner packets come from an independent decryption with
//! the `aes-gcm` crate using the keys published in the capture's README.

use std::net::Ipv4Addr;
use std::path::Path;

use aes_gcm::aead::{AeadInOut, KeyInit};
use iipnic::config::Network;
use iipnic::pcap;
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::sad::SaId;
use iipnic_firmware::wire::{checksum, ipv4};
use iipnic_firmware::{Disposition, DropReason, NativePolicy, Node, PacketBuf, Port};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/linux-6.1/iiptran.pcap"
);
const NETWORK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/linux-peer.toml");

/// From the capture's README: SPI -> (AES-128 key, salt).
fn keys(spi: u32) -> ([u8; 16], [u8; 4]) {
    let (key, salt) = match spi {
        0x1001 => ("000102030405060708090a0b0c0d0e0f", "a0a1a2a3"),
        0x2002 => ("101112131415161718191a1b1c1d1e1f", "b0b1b2b3"),
        other => panic!("unexpected SPI {other:#x}"),
    };
    (
        hex::decode(key).unwrap().try_into().unwrap(),
        hex::decode(salt).unwrap().try_into().unwrap(),
    )
}

struct Frame {
    wire: Vec<u8>,
    spi: u32,
    seq: u32,
    iv: [u8; 8],
    /// The inner packet, decrypted independently.
    inner: Vec<u8>,
}

fn frames() -> Vec<Frame> {
    let records = pcap::read(std::fs::File::open(CAPTURE).unwrap()).unwrap();
    assert_eq!(records.len(), 8);
    records
        .into_iter()
        .map(|r| {
            let wire = r.packet;
            assert_eq!((wire[0], wire[9]), (0x45, 50), "IPv4 carrying ESP");
            let esp = &wire[20..];
            let spi = u32::from_be_bytes(esp[0..4].try_into().unwrap());
            let seq = u32::from_be_bytes(esp[4..8].try_into().unwrap());
            let iv: [u8; 8] = esp[8..16].try_into().unwrap();
            let (key, salt) = keys(spi);
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&salt);
            nonce[4..].copy_from_slice(&iv);
            let (body, tag) = esp[16..].split_at(esp.len() - 16 - 16);
            let mut plain = body.to_vec();
            aes_gcm::Aes128Gcm::new(&key.into())
                .decrypt_inout_detached(
                    &nonce.into(),
                    &esp[..8],
                    plain.as_mut_slice().into(),
                    tag.try_into().unwrap(),
                )
                .expect("independent decryption");
            let next_header = plain[plain.len() - 1];
            let pad_len = usize::from(plain[plain.len() - 2]);
            assert_eq!(next_header, 4, "IPv4-in-IPv4");
            plain.truncate(plain.len() - 2 - pad_len);
            Frame {
                wire,
                spi,
                seq,
                iv,
                inner: plain,
            }
        })
        .collect()
}

fn nodes() -> Vec<Node<NativePolicy>> {
    Network::load(Path::new(NETWORK))
        .unwrap()
        .build_nodes(0)
        .unwrap()
}

/// Index of node A (0) or B (1) by underlay address.
fn node_of(addr: &[u8]) -> usize {
    match addr {
        [192, 0, 2, 1] => 0,
        [192, 0, 2, 2] => 1,
        other => panic!("unknown underlay address {other:?}"),
    }
}

fn inbound(node: &mut Node<NativePolicy>, wire: &[u8]) -> (Disposition, Vec<(Port, Vec<u8>)>) {
    let mut buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
    let mut pkt = PacketBuf::copy_from(&mut buf, wire).unwrap();
    let mut out = Vec::new();
    let d = node.from_underlay(&mut pkt, 0, &mut |port: Port, p: &[u8]| {
        out.push((port, p.to_vec()))
    });
    (d, out)
}

fn outbound(node: &mut Node<NativePolicy>, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
    let mut pkt = PacketBuf::copy_from(&mut buf, inner).unwrap();
    let mut out = Vec::new();
    let d = node.from_host(&mut pkt, 0, &mut |port: Port, p: &[u8]| {
        out.push((port, p.to_vec()))
    });
    assert_eq!(d, Disposition::Sent(Port::Underlay));
    out.pop().unwrap().1
}

#[test]
fn inbound_accepts_all_eight_and_delivers_the_inner_pings() {
    let mut nodes = nodes();
    let frames = frames();
    let mut requests = Vec::new();
    for frame in &frames {
        let receiver = node_of(&frame.wire[16..20]);
        let (d, out) = inbound(&mut nodes[receiver], &frame.wire);
        assert_eq!(
            d,
            Disposition::Sent(Port::Host),
            "frame spi {:#x} seq {}",
            frame.spi,
            frame.seq
        );
        assert_eq!(out.len(), 1);
        let inner = &out[0].1;
        assert_eq!(
            inner, &frame.inner,
            "differs from the independent decryption"
        );

        // Field by field, against what the README says the capture holds.
        let ip = ipv4::Packet::new_checked(&inner[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), inner.len());
        assert_eq!(ip.protocol(), 1);
        let a = Ipv4Addr::new(10, 99, 0, 1);
        let b = Ipv4Addr::new(10, 99, 0, 2);
        let icmp = ip.payload();
        assert_eq!(checksum::checksum(icmp), 0, "ICMP checksum");
        let (id, seq) = (
            u16::from_be_bytes([icmp[4], icmp[5]]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        );
        if frame.spi == 0x1001 {
            assert_eq!(
                (ip.src(), ip.dst(), icmp[0], receiver),
                (a, b, 8, 1),
                "A -> B echo request"
            );
            requests.push((id, seq, icmp[8..].to_vec()));
        } else {
            assert_eq!(
                (ip.src(), ip.dst(), icmp[0], receiver),
                (b, a, 0, 0),
                "B -> A echo reply"
            );
            let (req_id, req_seq, req_data) = requests.last().unwrap();
            assert_eq!(
                (id, seq),
                (*req_id, *req_seq),
                "reply answers the last request"
            );
            assert_eq!(&icmp[8..], &req_data[..], "echo data comes back unchanged");
        }
        assert_eq!(
            u32::from(seq),
            frame.seq,
            "ping n travels with ESP sequence n"
        );
    }
    for node in &nodes {
        let c = node.counters();
        assert_eq!((c.rx_underlay, c.tx_host, c.total_drops()), (4, 4, 0));
        let inbound_sa = node.sad().get(SaId(2)).unwrap();
        assert_eq!(inbound_sa.counters.traffic.rx_packets, 4);
        assert_eq!(inbound_sa.replay().top(), 4);
    }
}

#[test]
fn re_encrypting_each_inner_packet_reproduces_the_captured_frame() {
    let mut nodes = nodes();
    for frame in frames() {
        let sender = node_of(&frame.wire[12..16]);
        let node = &mut nodes[sender];
        node.sad_mut()
            .get_mut(SaId(1))
            .unwrap()
            .set_next_seq(u64::from(frame.seq));
        let mut ours = outbound(node, &frame.inner);
        assert_eq!(ours.len(), frame.wire.len());
        // Outer header: the kernel chose the identification (and so the checksum).
        let (theirs_ip, ours_ip) = (
            ipv4::Packet::new_checked(&frame.wire[..]).unwrap(),
            ipv4::Packet::new_checked(&ours[..]).unwrap(),
        );
        assert!(ours_ip.verify_checksum());
        assert_eq!(
            ours[..4],
            frame.wire[..4],
            "version, IHL, TOS, total length"
        );
        assert_eq!(
            ours[6..10],
            frame.wire[6..10],
            "flags (DF), offset, TTL, protocol"
        );
        assert_eq!(
            (ours_ip.src(), ours_ip.dst()),
            (theirs_ip.src(), theirs_ip.dst())
        );
        // ESP: our IV is the sequence number, Linux's is its own; with the captured IV
        // in place the sealed bytes must be the kernel's, byte for byte.
        assert_eq!(ours[20..28], frame.wire[20..28], "SPI and sequence number");
        let cipher = node.sad().get(SaId(1)).unwrap().cipher().clone();
        cipher.open(&mut ours[20..], None).unwrap();
        ours[28..36].copy_from_slice(&frame.iv);
        cipher.seal(&mut ours[20..], None).unwrap();
        assert_eq!(
            ours[20..],
            frame.wire[20..],
            "ESP bytes, spi {:#x} seq {}",
            frame.spi,
            frame.seq
        );
    }
}

#[test]
fn replays_are_dropped_and_counted() {
    let mut nodes = nodes();
    let frames = frames();
    for frame in &frames {
        let receiver = node_of(&frame.wire[16..20]);
        assert_eq!(
            inbound(&mut nodes[receiver], &frame.wire).0,
            Disposition::Sent(Port::Host)
        );
    }
    for frame in &frames {
        let receiver = node_of(&frame.wire[16..20]);
        assert_eq!(
            inbound(&mut nodes[receiver], &frame.wire).0,
            Disposition::Dropped(DropReason::Replay)
        );
    }
    for node in &nodes {
        assert_eq!(node.counters().drops(DropReason::Replay), 4);
        assert_eq!(node.sad().get(SaId(2)).unwrap().counters.replays, 4);
        assert_eq!(node.counters().tx_host, 4);
    }
}

#[test]
fn every_flipped_ciphertext_or_icv_bit_is_an_authentication_failure() {
    let mut nodes = nodes();
    let mut flips = [0u64; 2];
    for frame in frames() {
        let receiver = node_of(&frame.wire[16..20]);
        // Ciphertext (with trailer) and ICV: everything after the IV.
        for byte in 36..frame.wire.len() {
            for bit in 0..8 {
                let mut forged = frame.wire.clone();
                forged[byte] ^= 1 << bit;
                let (d, out) = inbound(&mut nodes[receiver], &forged);
                assert_eq!(
                    d,
                    Disposition::Dropped(DropReason::AuthFailed),
                    "byte {byte} bit {bit}"
                );
                assert!(out.is_empty());
                flips[receiver] += 1;
            }
        }
        // Forgeries did not move the window: the genuine packet is still accepted.
        assert_eq!(
            inbound(&mut nodes[receiver], &frame.wire).0,
            Disposition::Sent(Port::Host)
        );
    }
    for (node, flipped) in nodes.iter().zip(flips) {
        assert!(flipped > 3000);
        assert_eq!(node.counters().drops(DropReason::AuthFailed), flipped);
        assert_eq!(
            node.sad().get(SaId(2)).unwrap().counters.auth_failures,
            flipped
        );
    }
}
