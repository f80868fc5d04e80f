//! Outbound on A then inbound on B gives back the original VN packet, for every
//! address-family combination, transform, ICV length, ESN setting and size.

mod common;

use common::*;
use iipnic_firmware::esp::{Algorithm, IcvLen};
use iipnic_firmware::sad::SaId;
use iipnic_firmware::wire::{ipv4, ipv6, proto};
use iipnic_firmware::{Disposition, Port};
use proptest::prelude::*;

fn icv() -> impl Strategy<Value = IcvLen> {
    prop_oneof![
        Just(IcvLen::Eight),
        Just(IcvLen::Twelve),
        Just(IcvLen::Sixteen)
    ]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::AesGcm), Just(Algorithm::AesGmac)]
}

/// Checks the tunnel packet's framing as RFC 3884 + RFC 4303 transport mode lay it out.
fn check_framing(wire: &[u8], options: &Options, inner_len: usize, inner_v6: bool) {
    let (esp_at, protocol) = if options.outer_v6 {
        let p = ipv6::Packet::new_checked(wire).unwrap();
        assert_eq!(p.total_len(), wire.len());
        (40, p.next_header())
    } else {
        let p = ipv4::Packet::new_checked(wire).unwrap();
        assert!(p.verify_checksum());
        assert!(p.dont_frag());
        assert_eq!(p.total_len(), wire.len());
        (20, p.protocol())
    };
    assert_eq!(protocol, proto::ESP);
    let spi = u32::from_be_bytes(wire[esp_at..esp_at + 4].try_into().unwrap());
    assert_eq!(spi, SPI_A_TO_B);
    let body = inner_len + 2;
    let padded = body + (4 - body % 4) % 4;
    assert_eq!(wire.len(), esp_at + 8 + 8 + padded + options.icv.bytes());
    if options.algorithm == Algorithm::AesGmac {
        // ENCR_NULL_AUTH_AES_GMAC: the payload travels in clear, trailer included.
        let next_header = wire[wire.len() - options.icv.bytes() - 1];
        assert_eq!(
            next_header,
            if inner_v6 { proto::IPV6 } else { proto::IPIP }
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn outbound_then_inbound_is_identity(
        outer_v6 in any::<bool>(),
        inner_v6 in any::<bool>(),
        algorithm in algorithm(),
        icv in icv(),
        esn in any::<bool>(),
        aes256 in any::<bool>(),
        len in 20usize..=9000,
        tos in any::<u8>(),
        start in prop_oneof![Just(1u64), (u32::MAX as u64 - 3)..=(u32::MAX as u64 + 3)],
    ) {
        let len = if inner_v6 { len.max(40) } else { len };
        let options = Options {
            outer_v6, algorithm, icv, esn,
            key_bytes: if aes256 { 32 } else { 16 },
            vif_mtu: 9000, underlay_mtu: 9200,
            ..Options::default()
        };
        // Without ESN the 32-bit space ends at 2^32 - 1: start inside it.
        let start = if esn { start } else { start.min(u64::from(u32::MAX) - 1) };
        let (mut a, mut b) = pair(&options);
        a.sad_mut().get_mut(SaId(1)).unwrap().set_next_seq(start);
        if start > 1 {
            // B has seen the sequence numbers just before, as after a long-lived SA.
            b.sad_mut().get_mut(SaId(2)).unwrap().replay_mut().accept(start - 1);
        }
        // Any DSCP and ECN survive (RFC 6040: an inner CE stays CE through the tunnel).
        let (src, dst) = if inner_v6 { (v6(1, 5), v6(2, 9)) } else { (v4(1, 5), v4(2, 9)) };
        let inner = udp(src, dst, len, tos, true);
        let wire = encrypt(&mut a, &inner);
        check_framing(&wire, &options, len, inner_v6);
        let (d, out) = from_underlay(&mut b, &wire);
        prop_assert_eq!(d, Disposition::Sent(Port::Host));
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(&out[0].1, &inner);
        // A replay of the same packet is refused.
        let (d, _) = from_underlay(&mut b, &wire);
        prop_assert!(matches!(d, Disposition::Dropped(iipnic_firmware::DropReason::Replay)));
    }
}

#[test]
fn every_family_combination_carries_the_right_next_header() {
    for outer_v6 in [false, true] {
        for inner_v6 in [false, true] {
            let options = Options {
                outer_v6,
                ..Options::default()
            };
            let (mut a, mut b) = pair(&options);
            let (src, dst) = if inner_v6 {
                (v6(1, 1), v6(2, 1))
            } else {
                (v4(1, 1), v4(2, 1))
            };
            let inner = udp(src, dst, 200, 0, true);
            let wire = encrypt(&mut a, &inner);
            check_framing(&wire, &options, 200, inner_v6);
            let (d, out) = from_underlay(&mut b, &wire);
            assert_eq!(
                d,
                Disposition::Sent(Port::Host),
                "outer v6 {outer_v6}, inner v6 {inner_v6}"
            );
            assert_eq!(out[0].1, inner);
        }
    }
}
