//! RFC behaviours of the pipelines, each checked against what the RFC says and counted
//! under its named reason.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use iipnic_firmware::control::ControlOp;
use iipnic_firmware::esp::{EspCipher, IcvLen};
use iipnic_firmware::sad::{Lifetime, SaEventKind, SaId};
use iipnic_firmware::spd::{Action, Direction, Selector, SpdEntry, SpdEntryId};
use iipnic_firmware::vif::VifId;
use iipnic_firmware::wire::{checksum, ipv4, ipv6, proto};
use iipnic_firmware::{Disposition, DropReason, Port};

fn dropped(reason: DropReason) -> Disposition {
    Disposition::Dropped(reason)
}

/// A tunnel packet from A to B sealed by hand, so tests can put anything in the trailer.
fn craft(seq: u32, body: &[u8], outer_src: Ipv4Addr) -> Vec<u8> {
    let cipher = EspCipher::new(
        iipnic_firmware::esp::Algorithm::AesGcm,
        key(KEY_A_TO_B, 16).as_bytes(),
        IcvLen::Sixteen,
    )
    .unwrap();
    let esp_len = 16 + body.len() + 16;
    let mut p = vec![0u8; 20 + esp_len];
    ipv4::Repr {
        src: outer_src,
        dst: Ipv4Addr::new(192, 0, 2, 2),
        protocol: proto::ESP,
        payload_len: esp_len,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p[20..24].copy_from_slice(&SPI_A_TO_B.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..36].copy_from_slice(&u64::from(seq).to_be_bytes());
    p[36..36 + body.len()].copy_from_slice(body);
    cipher.seal(&mut p[20..], None).unwrap();
    p
}

/// Inner packet + RFC 4303 trailer with the given padding and next header.
fn body(inner: &[u8], padding: &[u8], next_header: u8) -> Vec<u8> {
    let mut b = inner.to_vec();
    b.extend_from_slice(padding);
    b.push(padding.len() as u8);
    b.push(next_header);
    b
}

fn ping() -> Vec<u8> {
    udp(v4(1, 5), v4(2, 9), 62, 0, true)
}

#[test]
fn hand_crafted_packet_is_accepted_when_well_formed() {
    let (_, mut b) = pair(&Options::default());
    let inner = ping();
    let wire = craft(
        1,
        &body(&inner, &[], proto::IPIP),
        Ipv4Addr::new(192, 0, 2, 1),
    );
    let (d, out) = from_underlay(&mut b, &wire);
    assert_eq!(d, Disposition::Sent(Port::Host));
    assert_eq!(out[0].1, inner);
}

#[test]
fn replay_window_edges() {
    let (mut a, mut b) = pair(&Options {
        replay_window: 64,
        ..Options::default()
    });
    let inner = ping();
    let at = |a: &mut iipnic_firmware::Node<_>, seq: u64| {
        a.sad_mut().get_mut(SaId(1)).unwrap().set_next_seq(seq);
        encrypt(a, &inner)
    };
    let packets: Vec<Vec<u8>> = (1..=100).map(|s| at(&mut a, s)).collect();
    for p in &packets[..99] {
        assert_eq!(from_underlay(&mut b, p).0, Disposition::Sent(Port::Host));
    }
    // Top is 99: the window is 36..=99.
    assert_eq!(
        from_underlay(&mut b, &packets[34]).0,
        dropped(DropReason::Replay),
        "seq 35 is just left of the window"
    );
    assert_eq!(
        from_underlay(&mut b, &packets[50]).0,
        dropped(DropReason::Replay),
        "duplicate inside"
    );
    assert_eq!(
        from_underlay(&mut b, &packets[99]).0,
        Disposition::Sent(Port::Host),
        "next in line"
    );
    // Far right jump: everything the jump leaves behind falls out.
    let far = at(&mut a, 100_000);
    assert_eq!(from_underlay(&mut b, &far).0, Disposition::Sent(Port::Host));
    let inside = at(&mut a, 100_000 - 63);
    let outside = at(&mut a, 100_000 - 64);
    assert_eq!(
        from_underlay(&mut b, &outside).0,
        dropped(DropReason::Replay)
    );
    assert_eq!(
        from_underlay(&mut b, &inside).0,
        Disposition::Sent(Port::Host)
    );
    assert_eq!(b.counters().drops(DropReason::Replay), 3);
}

#[test]
fn esn_high_bits_are_inferred_at_the_window_edge() {
    let options = Options {
        esn: true,
        replay_window: 64,
        ..Options::default()
    };
    let (mut a, mut b) = pair(&options);
    let inner = ping();
    let mut send = |seq: u64| {
        a.sad_mut().get_mut(SaId(1)).unwrap().set_next_seq(seq);
        encrypt(&mut a, &inner)
    };
    let before_wrap = send(u64::from(u32::MAX) - 10);
    let after_wrap = send((1 << 32) + 20);
    let late = send(u64::from(u32::MAX) - 5);
    b.sad_mut()
        .get_mut(SaId(2))
        .unwrap()
        .replay_mut()
        .accept(u64::from(u32::MAX) - 40);
    assert_eq!(
        from_underlay(&mut b, &before_wrap).0,
        Disposition::Sent(Port::Host)
    );
    // Low half 20 is inferred to be in the next 2^32 block (case A of RFC 4303 A2.2):
    // the ICV covers the high half, so a wrong guess would fail authentication.
    assert_eq!(
        from_underlay(&mut b, &after_wrap).0,
        Disposition::Sent(Port::Host)
    );
    assert_eq!(b.sad().get(SaId(2)).unwrap().replay().top(), (1 << 32) + 20);
    // A late packet from the previous block is still inside the window (case B).
    assert_eq!(
        from_underlay(&mut b, &late).0,
        Disposition::Sent(Port::Host)
    );
    assert_eq!(b.counters().total_drops(), 0);
}

#[test]
fn sequence_number_zero_is_refused() {
    let (_, mut b) = pair(&Options::default());
    let wire = craft(
        0,
        &body(&ping(), &[], proto::IPIP),
        Ipv4Addr::new(192, 0, 2, 1),
    );
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        dropped(DropReason::SequenceZero)
    );
}

#[test]
fn padding_contents_are_checked() {
    let (_, mut b) = pair(&Options::default());
    let inner = ping(); // 62 bytes: 2 bytes of padding make 66 a multiple of 4
    let good = craft(
        1,
        &body(&inner, &[1, 2], proto::IPIP),
        Ipv4Addr::new(192, 0, 2, 1),
    );
    let bad = craft(
        2,
        &body(&inner, &[0, 0], proto::IPIP),
        Ipv4Addr::new(192, 0, 2, 1),
    );
    let too_long = craft(
        3,
        &[0u8, 0, 0, 200, proto::IPIP],
        Ipv4Addr::new(192, 0, 2, 1),
    );
    assert_eq!(
        from_underlay(&mut b, &good).0,
        Disposition::Sent(Port::Host)
    );
    assert_eq!(
        from_underlay(&mut b, &bad).0,
        dropped(DropReason::BadPadding)
    );
    assert_eq!(
        from_underlay(&mut b, &too_long).0,
        dropped(DropReason::BadPadding)
    );
}

#[test]
fn next_header_must_be_ipip_and_dummy_packets_are_discarded() {
    let (_, mut b) = pair(&Options::default());
    let src = Ipv4Addr::new(192, 0, 2, 1);
    let udp_nh = craft(1, &body(&ping(), &[], proto::UDP), src);
    assert_eq!(
        from_underlay(&mut b, &udp_nh).0,
        dropped(DropReason::BadNextHeader)
    );
    let dummy = craft(2, &body(&[0xaa; 30], &[], proto::NO_NEXT_HEADER), src);
    assert_eq!(
        from_underlay(&mut b, &dummy).0,
        dropped(DropReason::DummyPacket)
    );
    // Next header 41 with an IPv4 packet inside is malformed, not silently accepted.
    let mismatch = craft(3, &body(&ping(), &[], proto::IPV6), src);
    assert_eq!(
        from_underlay(&mut b, &mismatch).0,
        dropped(DropReason::InnerMalformed)
    );
}

#[test]
fn unknown_spi_truncated_and_icv_mismatch() {
    let (mut a, mut b) = pair(&Options::default());
    let wire = encrypt(&mut a, &ping());
    let mut unknown = wire.clone();
    unknown[20..24].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(
        from_underlay(&mut b, &unknown).0,
        dropped(DropReason::UnknownSpi)
    );

    let mut truncated = wire[..20 + 30].to_vec();
    truncated[2..4].copy_from_slice(&50u16.to_be_bytes());
    fix_ipv4_checksum(&mut truncated);
    assert_eq!(
        from_underlay(&mut b, &truncated).0,
        dropped(DropReason::TruncatedEsp)
    );
    let mut header_only = wire[..20 + 6].to_vec();
    header_only[2..4].copy_from_slice(&26u16.to_be_bytes());
    fix_ipv4_checksum(&mut header_only);
    assert_eq!(
        from_underlay(&mut b, &header_only).0,
        dropped(DropReason::TruncatedEsp)
    );

    let mut forged = wire.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    assert_eq!(
        from_underlay(&mut b, &forged).0,
        dropped(DropReason::AuthFailed)
    );
    // The forgery did not consume the sequence number.
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        Disposition::Sent(Port::Host)
    );
}

#[test]
fn decrypted_tunnel_header_must_match_the_sa_selectors() {
    let (_, mut b) = pair(&Options::default());
    // Right SPI and keys, but the tunnel packet claims another outer source.
    let wire = craft(
        1,
        &body(&ping(), &[], proto::IPIP),
        Ipv4Addr::new(192, 0, 2, 66),
    );
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        dropped(DropReason::InboundPolicyMismatch)
    );
}

#[test]
fn plaintext_ipip_from_a_protected_peer_is_discarded() {
    let (_, mut b) = pair(&Options::default());
    let inner = ping();
    let mut p = vec![0u8; 20 + inner.len()];
    ipv4::Repr {
        src: Ipv4Addr::new(192, 0, 2, 1),
        dst: Ipv4Addr::new(192, 0, 2, 2),
        protocol: proto::IPIP,
        payload_len: inner.len(),
        ttl: 64,
        tos: 0,
        ident: 9,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p[20..].copy_from_slice(&inner);
    assert_eq!(
        from_underlay(&mut b, &p).0,
        dropped(DropReason::PlaintextFromProtectedPeer)
    );
    // A BYPASS entry ahead of the PROTECT one lets the same packet in.
    let bypass = SpdEntry {
        id: SpdEntryId(9),
        direction: Direction::Inbound,
        selector: Selector {
            src: "192.0.2.1/32".parse().unwrap(),
            dst: "192.0.2.2/32".parse().unwrap(),
            protocol: Some(4),
        },
        action: Action::Bypass,
    };
    b.apply(
        ControlOp::UpsertSpdEntry {
            entry: bypass,
            position: Some(0),
        },
        0,
    )
    .unwrap();
    assert_eq!(from_underlay(&mut b, &p).0, Disposition::Sent(Port::Host));
}

#[test]
fn lifetime_expiry_mid_stream_raises_events() {
    let lifetime = Lifetime {
        soft_packets: Some(2),
        hard_packets: Some(3),
        ..Lifetime::default()
    };
    let (mut a, mut b) = pair(&Options {
        lifetime,
        ..Options::default()
    });
    let inner = ping();
    let mut results = Vec::new();
    for _ in 0..4 {
        let (d, out) = from_host(&mut a, &inner);
        results.push(d);
        if let Some((_, wire)) = out.first() {
            assert_eq!(from_underlay(&mut b, wire).0, Disposition::Sent(Port::Host));
        }
    }
    assert_eq!(results[..3], [Disposition::Sent(Port::Underlay); 3]);
    assert_eq!(results[3], dropped(DropReason::SaExpired));
    assert_eq!(
        a.next_event().map(|e| e.kind),
        Some(SaEventKind::SoftLifetime)
    );
    assert_eq!(
        a.next_event().map(|e| e.kind),
        Some(SaEventKind::HardLifetime)
    );
    assert_eq!(
        b.next_event().map(|e| e.kind),
        Some(SaEventKind::SoftLifetime)
    );
    // Time lifetimes too: B's inbound SA dies at 10 s.
    let lifetime = Lifetime {
        hard_seconds: Some(10),
        ..Lifetime::default()
    };
    let (mut a, mut b) = pair(&Options {
        lifetime,
        ..Options::default()
    });
    let wire = encrypt(&mut a, &inner);
    assert_eq!(
        from_underlay_at(&mut b, &wire, 10_000).0,
        dropped(DropReason::SaExpired)
    );
}

#[test]
fn outbound_sequence_numbers_never_wrap() {
    let (mut a, _) = pair(&Options::default());
    a.sad_mut()
        .get_mut(SaId(1))
        .unwrap()
        .set_next_seq(u64::from(u32::MAX));
    assert_eq!(
        from_host(&mut a, &ping()).0,
        Disposition::Sent(Port::Underlay)
    );
    assert_eq!(
        from_host(&mut a, &ping()).0,
        dropped(DropReason::SeqExhausted)
    );
    assert_eq!(
        a.next_event().map(|e| e.kind),
        Some(SaEventKind::SequenceExhausted)
    );
}

#[test]
fn too_big_with_df_answers_with_the_tunnel_mtu() {
    let (mut a, _) = pair(&Options {
        vif_mtu: 1400,
        ..Options::default()
    });
    let big = udp(v4(1, 5), v4(2, 9), 1500, 0, true);
    let (d, out) = from_host(&mut a, &big);
    assert_eq!(d, dropped(DropReason::TooBig));
    assert_eq!(out.len(), 1);
    let (port, icmp) = &out[0];
    assert_eq!(*port, Port::Host);
    let ip = ipv4::Packet::new_checked(&icmp[..]).unwrap();
    assert_eq!(ip.dst(), host_v4(1, 5));
    let msg = ip.payload();
    assert_eq!((msg[0], msg[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([msg[6], msg[7]]), 1400);
    assert_eq!(checksum::checksum(msg), 0);
    assert_eq!(&msg[8..28], &big[..20], "quotes the original header");

    let big6 = udp(v6(1, 5), v6(2, 9), 1500, 0, true);
    let (d, out) = from_host(&mut a, &big6);
    assert_eq!(d, dropped(DropReason::TooBig));
    let ip = ipv6::Packet::new_checked(&out[0].1[..]).unwrap();
    let msg = ip.payload();
    assert_eq!(msg[0], 2, "packet too big");
    assert_eq!(u32::from_be_bytes(msg[4..8].try_into().unwrap()), 1400);
    let pseudo =
        checksum::ipv6_pseudo_header(&ip.src(), &ip.dst(), proto::ICMPV6, msg.len() as u32);
    assert_eq!(checksum::finish(checksum::accumulate(pseudo, msg)), 0);
    assert_eq!(a.counters().drops(DropReason::TooBig), 2);
    assert_eq!(a.counters().icmp_errors_sent, 2);
}

#[test]
fn ipv4_without_df_is_fragmented_to_the_tunnel_mtu() {
    let (mut a, mut b) = pair(&Options {
        vif_mtu: 600,
        ..Options::default()
    });
    let big = udp(v4(1, 5), v4(2, 9), 1500, 0, false);
    let (d, out) = from_host(&mut a, &big);
    assert_eq!(d, Disposition::Sent(Port::Underlay));
    assert_eq!(out.len(), 3);
    let mut payload = Vec::new();
    for (_, wire) in &out {
        let (d, delivered) = from_underlay(&mut b, wire);
        assert_eq!(d, Disposition::Sent(Port::Host));
        let frag = ipv4::Packet::new_checked(&delivered[0].1[..]).unwrap();
        assert!(frag.verify_checksum());
        assert!(frag.total_len() <= 600);
        assert_eq!(frag.frag_offset(), payload.len());
        payload.extend_from_slice(frag.payload());
    }
    assert_eq!(payload, big[20..]);
}

#[test]
fn no_route_answers_net_unreachable() {
    let (mut a, _) = pair(&Options::default());
    let p = udp(
        v4(1, 5),
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
        100,
        0,
        true,
    );
    let (d, out) = from_host(&mut a, &p);
    assert_eq!(d, dropped(DropReason::NoRoute));
    let ip = ipv4::Packet::new_checked(&out[0].1[..]).unwrap();
    assert_eq!((ip.payload()[0], ip.payload()[1]), (3, 0));
}

#[test]
fn ttl_expires_in_transit_only() {
    let (mut a, mut b) = pair(&Options::default());
    // B forwards 10.3.0.0/16 back over the tunnel: transit.
    let transit = iipnic_firmware::fib::Route {
        prefix: "10.3.0.0/16".parse().unwrap(),
        target: iipnic_firmware::fib::RouteTarget::Vif {
            next_hops: vec![iipnic_firmware::fib::NextHop {
                vif: VifId(1),
                metric: 0,
                weight: 1,
            }],
        },
    };
    b.apply(ControlOp::UpsertRoute(transit.clone()), 0).unwrap();
    a.apply(ControlOp::UpsertRoute(transit), 0).unwrap();
    let mut p = udp(
        v4(1, 5),
        IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1)),
        100,
        0,
        true,
    );
    p[8] = 1;
    fix_ipv4_checksum(&mut p);
    // From the host, TTL 1 is fine: the node is the host's NIC.
    let wire = encrypt(&mut a, &p);
    // At B it is transit: time exceeded, sent back through the tunnel to the source.
    let (d, out) = from_underlay(&mut b, &wire);
    assert_eq!(d, dropped(DropReason::TtlExceeded));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Port::Underlay);
    let (d, back) = from_underlay(&mut a, &out[0].1);
    assert_eq!(d, Disposition::Sent(Port::Host));
    let ip = ipv4::Packet::new_checked(&back[0].1[..]).unwrap();
    assert_eq!((ip.dst(), ip.payload()[0]), (host_v4(1, 5), 11));
    // With TTL 2 the packet goes on, one lower.
    p[8] = 2;
    fix_ipv4_checksum(&mut p);
    let wire = encrypt(&mut a, &p);
    let (d, out) = from_underlay(&mut b, &wire);
    assert_eq!(d, Disposition::Sent(Port::Underlay));
    let (_, back) = from_underlay(&mut a, &out[0].1);
    // A has no route for 10.3/16 other than the tunnel: it would loop, TTL stops it.
    assert!(back.iter().all(|(port, _)| *port == Port::Underlay));
}

#[test]
fn ingress_filtering_strict_drops_spoofed_sources() {
    let (_, mut b) = pair(&Options::default());
    // Source 10.2.0.7 lives behind B itself, not behind the vif it arrived on.
    let spoofed = udp(v4(2, 7), v4(2, 9), 80, 0, true);
    let wire = craft(
        1,
        &body(&spoofed, &[1, 2], proto::IPIP),
        Ipv4Addr::new(192, 0, 2, 1),
    );
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        dropped(DropReason::UrpfFailed)
    );
}

#[test]
fn ecn_decapsulation_follows_rfc_6040() {
    let (mut a, mut b) = pair(&Options::default());
    let mark_outer_ce = |wire: &mut Vec<u8>| {
        wire[1] |= 0b11;
        fix_ipv4_checksum(wire);
    };
    // Not-ECT inner, CE outer: drop.
    let mut wire = encrypt(&mut a, &udp(v4(1, 5), v4(2, 9), 100, 0, true));
    mark_outer_ce(&mut wire);
    assert_eq!(from_underlay(&mut b, &wire).0, dropped(DropReason::EcnDrop));
    // ECT(0) inner, CE outer: the inner becomes CE, with a valid checksum.
    let mut wire = encrypt(&mut a, &udp(v4(1, 5), v4(2, 9), 100, 0b10, true));
    mark_outer_ce(&mut wire);
    let (d, out) = from_underlay(&mut b, &wire);
    assert_eq!(d, Disposition::Sent(Port::Host));
    let ip = ipv4::Packet::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(ip.ecn(), 0b11);
    assert!(ip.verify_checksum());
}

#[test]
fn outer_fragments_are_reassembled_before_esp() {
    let (mut a, mut b) = pair(&Options {
        vif_mtu: 1400,
        ..Options::default()
    });
    let inner = udp(v4(1, 5), v4(2, 9), 1000, 0, true);
    let wire = encrypt(&mut a, &inner);
    // Split the tunnel packet the way a router on the underlay would (RFC 791).
    let payload = &wire[20..];
    let mut first = wire[..20].to_vec();
    first.extend_from_slice(&payload[..512]);
    first[2..4].copy_from_slice(&(532u16).to_be_bytes());
    first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut first);
    let mut second = wire[..20].to_vec();
    second.extend_from_slice(&payload[512..]);
    second[2..4].copy_from_slice(&((20 + payload.len() - 512) as u16).to_be_bytes());
    second[6..8].copy_from_slice(&(512u16 / 8).to_be_bytes());
    fix_ipv4_checksum(&mut second);
    assert_eq!(from_underlay(&mut b, &second).0, Disposition::Held);
    let (d, out) = from_underlay(&mut b, &first);
    assert_eq!(d, Disposition::Sent(Port::Host));
    assert_eq!(out[0].1, inner);
    assert_eq!(b.counters().reassembled, 1);
}

#[test]
fn vif_down_and_policy_changes_take_effect_at_once() {
    let (mut a, _) = pair(&Options::default());
    assert_eq!(
        from_host(&mut a, &ping()).0,
        Disposition::Sent(Port::Underlay)
    );
    assert_eq!(
        from_host(&mut a, &ping()).0,
        Disposition::Sent(Port::Underlay)
    );
    assert_eq!(
        (a.counters().spd_cache_misses, a.counters().spd_cache_hits),
        (1, 1)
    );
    a.apply(
        ControlOp::SetVifState {
            id: VifId(1),
            up: false,
        },
        0,
    )
    .unwrap();
    assert_eq!(from_host(&mut a, &ping()).0, dropped(DropReason::NoNextHop));
    a.apply(
        ControlOp::SetVifState {
            id: VifId(1),
            up: true,
        },
        0,
    )
    .unwrap();
    // The cached PROTECT decision is re-derived after an SPD change.
    let discard = SpdEntry {
        id: SpdEntryId(1),
        direction: Direction::Outbound,
        selector: Selector {
            src: "192.0.2.1/32".parse().unwrap(),
            dst: "192.0.2.2/32".parse().unwrap(),
            protocol: None,
        },
        action: Action::Discard,
    };
    a.apply(
        ControlOp::UpsertSpdEntry {
            entry: discard,
            position: None,
        },
        0,
    )
    .unwrap();
    assert_eq!(
        from_host(&mut a, &ping()).0,
        dropped(DropReason::SpdDiscard)
    );
    assert_eq!(
        (a.counters().spd_cache_misses, a.counters().spd_cache_hits),
        (2, 1)
    );
}

#[test]
fn rekey_is_make_before_break() {
    let (mut a, mut b) = pair(&Options::default());
    let inner = ping();
    let old_wire = encrypt(&mut a, &inner);
    // 1. B installs the new inbound SA (new SPI) while the old one still works.
    let mut new_in = node_config(&Options::default(), 2, 1).sas[1].clone();
    new_in.id = SaId(3);
    new_in.spi = 0x3003;
    new_in.key =
        iipnic_firmware::control::HexKey::from_hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeffc0c1c2c3")
            .unwrap();
    b.apply(ControlOp::AddSa(new_in.clone()), 0).unwrap();
    // 2. A replaces its outbound SA under the same id: the next packet uses the new keys.
    let mut new_out = node_config(&Options::default(), 1, 2).sas[0].clone();
    new_out.spi = 0x3003;
    new_out.key = new_in.key.clone();
    a.apply(ControlOp::ReplaceSa(new_out), 0).unwrap();
    let new_wire = encrypt(&mut a, &inner);
    assert_eq!(
        u32::from_be_bytes(new_wire[20..24].try_into().unwrap()),
        0x3003
    );
    // Packets of both generations in flight are accepted: nothing is lost.
    assert_eq!(
        from_underlay(&mut b, &new_wire).0,
        Disposition::Sent(Port::Host)
    );
    assert_eq!(
        from_underlay(&mut b, &old_wire).0,
        Disposition::Sent(Port::Host)
    );
    // 3. The old inbound SA goes; its SPI is unknown from then on.
    b.apply(ControlOp::RemoveSa { id: SaId(2) }, 0).unwrap();
    assert_eq!(
        from_underlay(&mut b, &old_wire).0,
        dropped(DropReason::UnknownSpi)
    );
}

#[test]
fn hostile_inputs_are_counted_not_panics() {
    let (_, mut b) = pair(&Options::default());
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut held = 0;
    for len in 0..300 {
        let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = p.first_mut() {
            *first = if next() % 2 == 0 { 0x45 } else { 0x60 };
        }
        let (d, _) = from_underlay(&mut b, &p);
        match d {
            Disposition::Held => held += 1,
            Disposition::Dropped(_) | Disposition::Sent(Port::Punt) => {}
            other => panic!("random bytes were forwarded: {other:?}"),
        }
    }
    let c = b.counters();
    assert_eq!(c.rx_underlay, 300);
    // Every packet is accounted for: dropped under a reason, punted, or held.
    assert_eq!(c.total_drops() + c.punted + held, 300);
}

#[test]
fn ingress_filtering_loose_and_off() {
    use iipnic_firmware::vif::UrpfMode;
    let options = Options::default();
    let (_, mut b) = pair(&options);
    let spoofed = udp(v4(2, 7), v4(2, 9), 80, 0, true);
    let unroutable = udp(
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
        v4(2, 9),
        80,
        0,
        true,
    );
    let src = Ipv4Addr::new(192, 0, 2, 1);
    let set_mode = |b: &mut iipnic_firmware::Node<_>, urpf| {
        let mut vif = node_config(&options, 2, 1).vifs[0].clone();
        vif.urpf = urpf;
        b.apply(ControlOp::UpsertVif(vif), 0).unwrap();
    };
    set_mode(&mut b, UrpfMode::Loose);
    // Loose: a route back exists (to B's own host side), so the packet passes ...
    let wire = craft(1, &body(&spoofed, &[1, 2], proto::IPIP), src);
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        Disposition::Sent(Port::Host)
    );
    // ... but a source with no route back at all does not.
    let wire = craft(2, &body(&unroutable, &[1, 2], proto::IPIP), src);
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        dropped(DropReason::UrpfFailed)
    );
    set_mode(&mut b, UrpfMode::Off);
    let wire = craft(3, &body(&unroutable, &[1, 2], proto::IPIP), src);
    assert_eq!(
        from_underlay(&mut b, &wire).0,
        Disposition::Sent(Port::Host)
    );
}

#[test]
fn byte_lifetimes_fire_events_and_stop_the_sa() {
    let lifetime = Lifetime {
        soft_bytes: Some(300),
        hard_bytes: Some(500),
        ..Lifetime::default()
    };
    let (mut a, _) = pair(&Options {
        lifetime,
        ..Options::default()
    });
    let inner = udp(v4(1, 5), v4(2, 9), 200, 0, true);
    let results: Vec<Disposition> = (0..3).map(|_| from_host(&mut a, &inner).0).collect();
    // 200 + 200 = 400 bytes pass (soft at 300); the third packet would make 600 > 500.
    assert_eq!(
        results,
        [
            Disposition::Sent(Port::Underlay),
            Disposition::Sent(Port::Underlay),
            dropped(DropReason::SaExpired)
        ]
    );
    assert_eq!(
        a.next_event().map(|e| e.kind),
        Some(SaEventKind::SoftLifetime)
    );
    assert_eq!(
        a.next_event().map(|e| e.kind),
        Some(SaEventKind::HardLifetime)
    );
}

#[test]
fn ipv6_outer_fragments_are_reassembled() {
    let (mut a, mut b) = pair(&Options {
        outer_v6: true,
        ..Options::default()
    });
    let inner = udp(v4(1, 5), v4(2, 9), 600, 0, true);
    let wire = encrypt(&mut a, &inner);
    // RFC 8200 section 4.5: fixed header, fragment header, 8-byte aligned pieces.
    let payload = &wire[40..];
    let fragment = |offset: usize, piece: &[u8], more: bool| {
        let mut f = wire[..40].to_vec();
        f[4..6].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
        f[6] = proto::FRAGMENT;
        f.extend_from_slice(&[proto::ESP, 0]);
        f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        f.extend_from_slice(piece);
        f
    };
    let first = fragment(0, &payload[..320], true);
    let second = fragment(320, &payload[320..], false);
    assert_eq!(from_underlay(&mut b, &first).0, Disposition::Held);
    let (d, out) = from_underlay(&mut b, &second);
    assert_eq!(d, Disposition::Sent(Port::Host));
    assert_eq!(out[0].1, inner);
}

#[test]
fn incomplete_datagrams_time_out_and_are_counted() {
    let (mut a, mut b) = pair(&Options::default());
    let wire = encrypt(&mut a, &udp(v4(1, 5), v4(2, 9), 600, 0, true));
    let mut first = wire[..20 + 256].to_vec();
    first[2..4].copy_from_slice(&(276u16).to_be_bytes());
    first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut first);
    assert_eq!(from_underlay_at(&mut b, &first, 0).0, Disposition::Held);
    b.poll(60_000);
    assert_eq!(b.counters().drops(DropReason::FragmentTimeout), 1);
}
