//! Inbound: a tunnel packet in, a VN packet out (RFC 3884 section 3.2; RFC 4303 section
//! 3.4 for ESP processing; RFC 4301 section 5.2 for the inbound policy checks).
//!
//! 1. [`Node::from_underlay`]: validate the outer header; reassemble outer fragments.
//! 2. `Node::esp_input`: SAD by SPI, replay check, ICV and decryption, window update,
//!    trailer checks, SA selector and SPD-S check on the decrypted tunnel header.
//!    `Node::plaintext_input`: plaintext IPIP goes to SPD-I (BYPASS, or DISCARD for
//!    peers whose traffic must be protected).
//! 3. `Node::decapsulate`: the vif of the tunnel, RFC 6040 ECN, ingress filtering of
//!    the inner source, then VN forwarding again.

use core::net::IpAddr;

use crate::counters::DropReason;
use crate::esp::{OpenError, PAYLOAD_OFFSET, replay::ReplayError};
use crate::fib::RouteTarget;
use crate::node::Node;
use crate::packet_buf::PacketBuf;
use crate::pipeline::outbound::Ingress;
use crate::pipeline::{Disposition, InnerHeader, Port, Tx, ecn_decapsulate};
use crate::policy::{PolicyEngine, SpdQuery};
use crate::reassembly::FragmentOutcome;
use crate::sad::SaDirection;
use crate::spd::{Action, Direction, TunnelKey};
use crate::vif::UrpfMode;
use crate::wire::{WireError, esp, ipv4, ipv6, proto};

/// The outer header facts the inbound steps need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outer {
    src: IpAddr,
    dst: IpAddr,
    /// Bytes before the ESP header or the inner packet.
    header_len: usize,
    protocol: u8,
    ecn: u8,
}

enum OuterParse {
    Whole(Outer, usize),
    Fragment,
}

impl<P: PolicyEngine> Node<P> {
    /// Step 1: a packet from the underlay port.
    pub fn from_underlay(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        self.counters.rx_underlay += 1;
        self.outer_input(pkt, now_ms, tx, true)
    }

    /// Validates the outer header, then dispatches; a reassembled datagram
    /// (`may_be_fragment == false`) that still claims to be a fragment is malformed.
    fn outer_input(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        now_ms: u64,
        tx: &mut impl Tx,
        may_be_fragment: bool,
    ) -> Disposition {
        match parse_outer(pkt.data()) {
            Ok(OuterParse::Whole(outer, total_len)) => {
                pkt.truncate(total_len);
                self.underlay_input(pkt, outer, now_ms, tx)
            }
            Ok(OuterParse::Fragment) if may_be_fragment => self.reassemble(pkt, now_ms, tx),
            Ok(OuterParse::Fragment) => self.drop_packet(DropReason::Malformed),
            Err(reason) => self.drop_packet(reason),
        }
    }

    fn underlay_input(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        outer: Outer,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        if !self.settings.underlay.contains(&outer.dst) {
            return self.drop_packet(DropReason::NotForUs);
        }
        match outer.protocol {
            proto::ESP => self.esp_input(pkt, outer, now_ms, tx),
            proto::IPIP | proto::IPV6 => self.plaintext_input(pkt, outer, now_ms, tx),
            // IKE, ICMP to the underlay address and the rest belong to the host's stack.
            _ => self.deliver(pkt, Port::Punt, tx),
        }
    }

    /// Outer fragments wait in the reassembly buffer; the whole datagram continues.
    fn reassemble(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let expired = self.reassembly.expire(now_ms);
        if let Some(c) = self
            .counters
            .drops
            .get_mut(DropReason::FragmentTimeout as usize)
        {
            *c += expired;
        }
        let data = pkt.data();
        let outcome = match data.first().map(|b| b >> 4) {
            Some(4) => match ipv4::Packet::new_checked(data) {
                Ok(p) => self.reassembly.insert_v4(&p, now_ms),
                Err(_) => FragmentOutcome::Dropped(DropReason::Malformed),
            },
            _ => match ipv6::Packet::new_checked(data) {
                Ok(p) => match p.upper_layer() {
                    Ok(ipv6::UpperLayer {
                        fragment: Some(frag),
                        ..
                    }) => self.reassembly.insert_v6(&p, frag, now_ms),
                    _ => FragmentOutcome::Dropped(DropReason::Malformed),
                },
                Err(_) => FragmentOutcome::Dropped(DropReason::Malformed),
            },
        };
        let reassembled = match outcome {
            FragmentOutcome::Held => return Disposition::Held,
            FragmentOutcome::Dropped(reason) => {
                self.counters.drop(reason);
                return Disposition::Dropped(reason);
            }
            FragmentOutcome::Complete(datagram) => pkt.replace_with(datagram),
        };
        if !reassembled {
            return self.drop_packet(DropReason::NoBufferRoom);
        }
        self.counters.reassembled += 1;
        self.outer_input(pkt, now_ms, tx, false)
    }

    /// Step 2 (ESP): RFC 4303 section 3.4 in its order. The window moves only after the
    /// ICV verified, so forgeries cannot advance it.
    pub(crate) fn esp_input(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        outer: Outer,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let Some(envelope) = pkt.data().get(outer.header_len..) else {
            return self.drop_packet(DropReason::TruncatedEsp);
        };
        let Ok(header) = esp::Packet::new_checked(envelope) else {
            return self.drop_packet(DropReason::TruncatedEsp);
        };
        let (spi, seq_low) = (header.spi(), header.seq());
        let Some(sa_id) = self.sad.lookup_inbound(spi, outer.dst) else {
            return self.drop_packet(DropReason::UnknownSpi);
        };
        let Some((sa, events)) = self.sad.sa_and_events(sa_id) else {
            return self.drop_packet(DropReason::UnknownSpi);
        };
        if sa.config().direction != SaDirection::Inbound {
            return self.drop_packet(DropReason::UnknownSpi);
        }
        if sa.check_time(now_ms, events).is_err() {
            return self.drop_on_sa(sa_id, DropReason::SaExpired);
        }
        let icv_len = sa.cipher().icv_len();
        if envelope.len() < PAYLOAD_OFFSET + 2 + icv_len {
            return self.drop_on_sa(sa_id, DropReason::TruncatedEsp);
        }
        let seq = match sa.replay().check(seq_low) {
            Ok(seq) => seq,
            Err(ReplayError::Zero) => return self.drop_on_sa(sa_id, DropReason::SequenceZero),
            Err(ReplayError::Duplicate | ReplayError::TooOld) => {
                sa.counters.replays += 1;
                return self.drop_on_sa(sa_id, DropReason::Replay);
            }
        };
        let seq_high = sa.config().esn.then_some((seq >> 32) as u32);
        let opened = match pkt.data_mut().get_mut(outer.header_len..) {
            Some(envelope) => sa.cipher().open(envelope, seq_high),
            None => Err(OpenError::Truncated),
        };
        match opened {
            Ok(()) => {}
            Err(OpenError::Truncated) => return self.drop_on_sa(sa_id, DropReason::TruncatedEsp),
            Err(OpenError::Authentication) => {
                sa.counters.auth_failures += 1;
                return self.drop_on_sa(sa_id, DropReason::AuthFailed);
            }
        }
        sa.replay_mut().accept(seq);
        let body_len = envelope_body_len(pkt.len() - outer.header_len, icv_len);
        if sa.account(body_len, false, now_ms, events).is_err() {
            return self.drop_on_sa(sa_id, DropReason::SaExpired);
        }
        let selectors = sa.config().selector();
        // Trailer (RFC 4303 section 2.4-2.6): next header, pad length, padding 1, 2, 3, ...
        let body_start = outer.header_len + PAYLOAD_OFFSET;
        let Some(body) = pkt.data().get(body_start..body_start + body_len) else {
            return self.drop_on_sa(sa_id, DropReason::TruncatedEsp);
        };
        let (next_header, pad_len) = match body {
            [.., pad_len, next] => (*next, usize::from(*pad_len)),
            _ => return self.drop_on_sa(sa_id, DropReason::TruncatedEsp),
        };
        let Some(inner_len) = body_len.checked_sub(2 + pad_len) else {
            return self.drop_on_sa(sa_id, DropReason::BadPadding);
        };
        if !body
            .get(inner_len..body_len - 2)
            .is_some_and(esp::padding_is_monotonic)
        {
            return self.drop_on_sa(sa_id, DropReason::BadPadding);
        }
        if next_header == proto::NO_NEXT_HEADER {
            return self.drop_on_sa(sa_id, DropReason::DummyPacket);
        }
        if next_header != proto::IPIP && next_header != proto::IPV6 {
            return self.drop_on_sa(sa_id, DropReason::BadNextHeader);
        }
        // RFC 4301 section 5.2 step 4: the decrypted tunnel header must match the SA's
        // selectors, and the SPD (SPD-S) must still want this traffic protected.
        if !selectors.matches(outer.src, outer.dst, next_header) {
            return self.drop_on_sa(sa_id, DropReason::InboundPolicyMismatch);
        }
        let decision = self.spd_decision(SpdQuery {
            direction: Direction::Inbound,
            key: TunnelKey {
                src: outer.src,
                dst: outer.dst,
                protocol: next_header,
            },
            protected: true,
            now_ms,
        });
        match decision.action {
            Action::Protect { sa: None } => {}
            Action::Protect { sa: Some(expected) } if expected == sa_id => {}
            _ => return self.drop_on_sa(sa_id, DropReason::InboundPolicyMismatch),
        }
        pkt.truncate(body_start + inner_len);
        pkt.trim_front(body_start);
        self.decapsulate(pkt, outer, next_header, now_ms, tx)
    }

    /// Step 2 (plaintext IPIP): SPD-I decides; traffic that must be protected is dropped.
    pub(crate) fn plaintext_input(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        outer: Outer,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let decision = self.spd_decision(SpdQuery {
            direction: Direction::Inbound,
            key: TunnelKey {
                src: outer.src,
                dst: outer.dst,
                protocol: outer.protocol,
            },
            protected: false,
            now_ms,
        });
        match decision.action {
            Action::Bypass => {}
            Action::Protect { .. } => {
                return self.drop_packet(DropReason::PlaintextFromProtectedPeer);
            }
            Action::Discard => return self.drop_packet(DropReason::SpdDiscard),
        }
        pkt.trim_front(outer.header_len);
        self.decapsulate(pkt, outer, outer.protocol, now_ms, tx)
    }

    /// Step 3: IPIP decapsulation on the vif bound to the tunnel, then VN forwarding.
    fn decapsulate(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        outer: Outer,
        next_header: u8,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let Some(vif_id) = self.vifs.by_endpoints(outer.src, outer.dst) else {
            return self.drop_packet(DropReason::NoVif);
        };
        let (up, urpf) = match self.vifs.get(vif_id) {
            Some(v) => (v.config.up, v.config.urpf),
            None => return self.drop_packet(DropReason::NoVif),
        };
        if !up {
            return self.drop_on_vif(vif_id, DropReason::VifDown);
        }
        let inner = match InnerHeader::parse(pkt.data()) {
            Ok(inner) if inner.tunnel_protocol() == next_header => inner,
            _ => return self.drop_on_vif(vif_id, DropReason::InnerMalformed),
        };
        pkt.truncate(inner.len);
        let Some(ecn) = ecn_decapsulate(inner.tos, outer.ecn) else {
            return self.drop_on_vif(vif_id, DropReason::EcnDrop);
        };
        if ecn != inner.tos & 0x03 {
            set_ecn(pkt.data_mut(), ecn);
        }
        let inner = InnerHeader {
            tos: (inner.tos & !0x03) | ecn,
            ..inner
        };
        if !self.source_is_valid(inner.src, vif_id, urpf) {
            return self.drop_on_vif(vif_id, DropReason::UrpfFailed);
        }
        if let Some(v) = self.vifs.get_mut(vif_id) {
            v.counters.rx_packets += 1;
            v.counters.rx_bytes += inner.len as u64;
        }
        self.forward(pkt, &inner, Ingress::Vif(vif_id), now_ms, tx)
    }

    /// Ingress filtering (RFC 3704): strict wants the route back to the source to use the
    /// arrival vif; loose wants any usable route back.
    fn source_is_valid(&self, src: IpAddr, vif: crate::vif::VifId, mode: UrpfMode) -> bool {
        let route = || self.fib.lookup(src).map(|r| &r.target);
        match mode {
            UrpfMode::Off => true,
            UrpfMode::Loose => !matches!(route(), None | Some(RouteTarget::Blackhole)),
            UrpfMode::Strict => matches!(
                route(),
                Some(RouteTarget::Vif { next_hops }) if next_hops.iter().any(|nh| nh.vif == vif)
            ),
        }
    }
}

/// Bytes between the IV and the ICV of an envelope of `len` bytes.
fn envelope_body_len(len: usize, icv_len: usize) -> usize {
    len.saturating_sub(PAYLOAD_OFFSET + icv_len)
}

fn set_ecn(packet: &mut [u8], ecn: u8) {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            if let Ok(mut p) = ipv4::Packet::new_checked(packet) {
                p.set_ecn(ecn);
                p.fill_checksum();
            }
        }
        Some(6) => {
            if let Ok(mut p) = ipv6::Packet::new_checked(packet) {
                p.set_ecn(ecn);
            }
        }
        _ => {}
    }
}

/// Validates the outer header: IPv4 with a good checksum, or IPv6 with a sane extension
/// chain. Returns where ESP / the inner packet starts and the datagram length.
fn parse_outer(data: &[u8]) -> Result<OuterParse, DropReason> {
    let malformed = |e: WireError| match e {
        WireError::BadChecksum => DropReason::BadChecksum,
        _ => DropReason::Malformed,
    };
    match data.first().map(|b| b >> 4) {
        Some(4) => {
            let p = ipv4::Packet::new_checked(data).map_err(malformed)?;
            if !p.verify_checksum() {
                return Err(DropReason::BadChecksum);
            }
            if p.is_fragment() {
                return Ok(OuterParse::Fragment);
            }
            Ok(OuterParse::Whole(
                Outer {
                    src: IpAddr::V4(p.src()),
                    dst: IpAddr::V4(p.dst()),
                    header_len: p.header_len(),
                    protocol: p.protocol(),
                    ecn: p.ecn(),
                },
                p.total_len(),
            ))
        }
        Some(6) => {
            let p = ipv6::Packet::new_checked(data).map_err(malformed)?;
            let ul = p.upper_layer().map_err(malformed)?;
            if ul.fragment.is_some() {
                return Ok(OuterParse::Fragment);
            }
            Ok(OuterParse::Whole(
                Outer {
                    src: IpAddr::V6(p.src()),
                    dst: IpAddr::V6(p.dst()),
                    header_len: ul.offset,
                    protocol: ul.protocol,
                    ecn: p.ecn(),
                },
                p.total_len(),
            ))
        }
        _ => Err(DropReason::Malformed),
    }
}
