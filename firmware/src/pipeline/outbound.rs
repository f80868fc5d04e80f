//! Outbound: a VN packet in, a tunnel packet out (RFC 3884 section 3.1, with RFC 2003 /
//! RFC 2473 encapsulation and RFC 4303 transport-mode ESP on the tunnel packet).
//!
//! 1. [`Node::from_host`]: validate the VN packet.
//! 2. `Node::forward`: VN forwarding lookup, route selection, TTL in transit.
//! 3. `Node::encapsulate`: tunnel MTU / PMTU, then SPD-O on the tunnel header.
//! 4. `Node::send_protected` or `Node::send_bypass`: IPIP header, and ESP when PROTECT.
//!
//! Steps 3 and 4 build the outer header and the ESP header in one pass: the SPD key is
//! fully known from the vif (outer src, outer dst, next protocol) before any byte is
//! written, so the tunnel packet never has to be shifted to make room for ESP.

use core::net::IpAddr;

use crate::counters::DropReason;
use crate::esp::{IV_LEN, PAYLOAD_OFFSET};
use crate::fib::{FlowKey, MAX_NEXT_HOPS, NextHop, RouteTarget};
use crate::node::Node;
use crate::packet_buf::{HEADROOM, PacketBuf};
use crate::pipeline::{Disposition, InnerHeader, Port, Tx, ecn_encapsulate};
use crate::policy::{Candidate, PolicyEngine, RouteQuery, SpdQuery};
use crate::sad::{SaDirection, SaId, SaStopped};
use crate::spd::{Action, Direction, TunnelKey};
use crate::vif::{DfMode, DscpMode, Tunnel, VifId};
use crate::wire::icmp::{self, ErrorKind};
use crate::wire::{esp, ipv4, ipv6, proto};

/// Where a VN packet entered the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// From the host side: the host is the sender, the node is its NIC (no TTL decrement).
    Host,
    /// Decapsulated from this vif: forwarding onward is transit and decrements TTL.
    Vif(VifId),
    /// An ICMP error the node generated itself.
    NodeGenerated,
}

impl<P: PolicyEngine> Node<P> {
    /// Step 1: a VN packet from the host side.
    pub fn from_host(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        self.counters.rx_host += 1;
        match InnerHeader::parse(pkt.data()) {
            Ok(inner) => {
                pkt.truncate(inner.len);
                self.forward(pkt, &inner, Ingress::Host, now_ms, tx)
            }
            Err(reason) => self.drop_packet(reason),
        }
    }

    /// Step 2: VN forwarding. Longest-prefix match on the inner destination, then the
    /// policy engine picks one of the route's candidate vifs.
    pub(crate) fn forward(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        ingress: Ingress,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let Some(route) = self.fib.lookup(inner.dst) else {
            return self.icmp_error(
                pkt,
                inner,
                ErrorKind::NetUnreachable,
                DropReason::NoRoute,
                now_ms,
                tx,
            );
        };
        let next_hops = match &route.target {
            RouteTarget::Host => return self.deliver(pkt, Port::Host, tx),
            RouteTarget::Local => return self.deliver(pkt, Port::Punt, tx),
            RouteTarget::Blackhole => return self.drop_packet(DropReason::Blackhole),
            RouteTarget::Vif { next_hops } => next_hops,
        };
        let flow = FlowKey {
            src: inner.src,
            dst: inner.dst,
            protocol: inner.protocol,
            flow_hash: inner.flow_hash,
        };
        let generation = self.policy_generation();
        let choice = match self.route_cache.get(&flow, generation) {
            Some(choice) => {
                self.counters.route_cache_hits += 1;
                choice
            }
            None => {
                self.counters.route_cache_misses += 1;
                let decision =
                    select_next_hop(&mut self.policy, &self.vifs, inner, next_hops, now_ms);
                if decision.1 {
                    self.route_cache.insert(flow, decision.0, generation);
                }
                decision.0
            }
        };
        let Some(vif) = choice else {
            return self.drop_packet(DropReason::NoNextHop);
        };
        if matches!(ingress, Ingress::Vif(_)) {
            if inner.ttl <= 1 {
                return self.icmp_error(
                    pkt,
                    inner,
                    ErrorKind::TimeExceeded,
                    DropReason::TtlExceeded,
                    now_ms,
                    tx,
                );
            }
            decrement_ttl(pkt.data_mut(), inner.is_ipv4());
        }
        self.encapsulate(pkt, inner, vif, now_ms, tx)
    }

    /// Step 3: tunnel MTU, then SPD-O on the tunnel header.
    pub(crate) fn encapsulate(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        vif_id: VifId,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let Some(vif) = self.vifs.get(vif_id).map(|v| v.config.tunnel()) else {
            return self.drop_packet(DropReason::NoVif);
        };
        if !vif.up {
            return self.drop_on_vif(vif_id, DropReason::VifDown);
        }
        if inner.len > usize::from(vif.mtu) {
            if inner.dont_frag {
                // RFC 2003 section 5.1 / RFC 4459: tell the sender the tunnel MTU.
                self.drop_on_vif(vif_id, DropReason::TooBig);
                let kind = ErrorKind::TooBig { mtu: vif.mtu };
                return self.icmp_error_counted(pkt, inner, kind, DropReason::TooBig, now_ms, tx);
            }
            return self.fragment_inner(pkt, inner, vif_id, vif.mtu, now_ms, tx);
        }
        let key = TunnelKey {
            src: vif.local,
            dst: vif.remote,
            protocol: inner.tunnel_protocol(),
        };
        let decision = self.spd_decision(SpdQuery {
            direction: Direction::Outbound,
            key,
            protected: false,
            now_ms,
        });
        match decision.action {
            Action::Discard => self.drop_on_vif(vif_id, DropReason::SpdDiscard),
            Action::Bypass => self.send_bypass(pkt, inner, &vif, tx),
            Action::Protect { sa: Some(sa) } => {
                self.send_protected(pkt, inner, &vif, sa, now_ms, tx)
            }
            Action::Protect { sa: None } => self.drop_on_vif(vif_id, DropReason::PolicyUnknownSa),
        }
    }

    /// Step 4a (BYPASS): the plain IPIP packet.
    fn send_bypass(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        vif: &Tunnel,
        tx: &mut impl Tx,
    ) -> Disposition {
        let outer_len = outer_header_len(vif.local);
        if inner.len + outer_len > usize::from(self.settings.underlay_mtu) {
            return self.drop_on_vif(vif.id, DropReason::UnderlayMtuExceeded);
        }
        let ident = self.take_ident();
        let Some(header) = pkt.prepend(outer_len) else {
            return self.drop_on_vif(vif.id, DropReason::NoBufferRoom);
        };
        if emit_outer(
            header,
            vif,
            inner,
            inner.tunnel_protocol(),
            inner.len,
            ident,
        )
        .is_err()
        {
            return self.drop_on_vif(vif.id, DropReason::NoBufferRoom);
        }
        self.count_vif_tx(vif.id, inner.len);
        self.deliver(pkt, Port::Underlay, tx)
    }

    /// Step 4b (PROTECT): IPIP header with protocol 50, then ESP in transport mode on the
    /// tunnel packet: Next Header 4 or 41, explicit IV = sequence number (unique per SA).
    fn send_protected(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        vif: &Tunnel,
        sa_id: SaId,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let ident = self.take_ident();
        let outer_len = outer_header_len(vif.local);
        let underlay_mtu = usize::from(self.settings.underlay_mtu);
        let Some((sa, events)) = self.sad.sa_and_events(sa_id) else {
            return self.drop_on_vif(vif.id, DropReason::PolicyUnknownSa);
        };
        if sa.config().direction != SaDirection::Outbound {
            return self.drop_on_vif(vif.id, DropReason::PolicyUnknownSa);
        }
        let pad = esp::pad_len(inner.len);
        let trailer = sa.cipher().trailer_len(inner.len);
        let esp_len = PAYLOAD_OFFSET + inner.len + trailer;
        if outer_len + esp_len > underlay_mtu {
            return self.drop_on_vif(vif.id, DropReason::UnderlayMtuExceeded);
        }
        if pkt.headroom() < outer_len + PAYLOAD_OFFSET || pkt.tailroom() < trailer {
            return self.drop_on_vif(vif.id, DropReason::NoBufferRoom);
        }
        if sa.check_time(now_ms, events).is_err() {
            return self.drop_on_sa(sa_id, DropReason::SaExpired);
        }
        let seq = match sa.take_seq(now_ms, events) {
            Ok(seq) => seq,
            Err(SaStopped::SequenceExhausted) => {
                return self.drop_on_sa(sa_id, DropReason::SeqExhausted);
            }
            Err(SaStopped::Expired) => return self.drop_on_sa(sa_id, DropReason::SaExpired),
        };
        if sa.account(inner.len, true, now_ms, events).is_err() {
            return self.drop_on_sa(sa_id, DropReason::SaExpired);
        }
        let spi = sa.config().spi;
        let seq_high = sa.config().esn.then_some((seq >> 32) as u32);
        // Trailer: padding 1, 2, 3, ..., pad length, next header; the ICV is written by seal.
        if let Some(t) = pkt.append(trailer) {
            for (i, b) in t.iter_mut().take(pad).enumerate() {
                *b = i as u8 + 1;
            }
            if let Some(b) = t.get_mut(pad) {
                *b = pad as u8;
            }
            if let Some(b) = t.get_mut(pad + 1) {
                *b = inner.tunnel_protocol();
            }
        }
        if let Some(h) = pkt.prepend(PAYLOAD_OFFSET) {
            let _ = esp::Repr {
                spi,
                seq: seq as u32,
            }
            .emit(h);
            if let Some(iv) = h.get_mut(esp::HEADER_LEN..esp::HEADER_LEN + IV_LEN) {
                iv.copy_from_slice(&seq.to_be_bytes());
            }
        }
        let sealed = match pkt.prepend(outer_len) {
            Some(h) => emit_outer(h, vif, inner, proto::ESP, esp_len, ident).is_ok(),
            None => false,
        };
        let sealed = sealed
            && pkt
                .data_mut()
                .get_mut(outer_len..)
                .is_some_and(|envelope| sa.cipher().seal(envelope, seq_high).is_ok());
        if !sealed {
            // Unreachable given the room checks above; counted rather than assumed.
            return self.drop_on_vif(vif.id, DropReason::NoBufferRoom);
        }
        self.count_vif_tx(vif.id, inner.len);
        self.deliver(pkt, Port::Underlay, tx)
    }

    /// RFC 791 fragmentation of an IPv4 inner packet without DF that exceeds the tunnel
    /// MTU; each fragment is encapsulated on its own.
    fn fragment_inner(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        vif: VifId,
        mtu: u16,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let Ok(original) = ipv4::Packet::new_checked(pkt.data()) else {
            return self.drop_on_vif(vif, DropReason::InnerMalformed);
        };
        let header_len = original.header_len();
        let payload_len = original.total_len() - header_len;
        let chunk = (usize::from(mtu).saturating_sub(header_len)) & !7;
        if chunk == 0 {
            return self.drop_on_vif(vif, DropReason::TooBig);
        }
        let base_offset = original.frag_offset();
        let original_more = original.more_frags();
        let mut scratch = core::mem::take(&mut self.scratch);
        let mut result = Disposition::Dropped(DropReason::NoBufferRoom);
        let mut offset = 0;
        while offset < payload_len {
            let len = chunk.min(payload_len - offset);
            let more = offset + len < payload_len || original_more;
            let Some(mut frag) = PacketBuf::new(&mut scratch, HEADROOM, header_len + len) else {
                result = self.drop_on_vif(vif, DropReason::NoBufferRoom);
                break;
            };
            let data = frag.data_mut();
            let (src_header, src_payload) = (
                pkt.data().get(..header_len),
                pkt.data()
                    .get(header_len + offset..header_len + offset + len),
            );
            let (Some(src_header), Some(src_payload)) = (src_header, src_payload) else {
                break;
            };
            data[..header_len].copy_from_slice(src_header);
            data[header_len..].copy_from_slice(src_payload);
            let field = (((base_offset + offset) / 8) as u16) | if more { 0x2000 } else { 0 };
            crate::wire::write_u16(data, 2, (header_len + len) as u16);
            crate::wire::write_u16(data, 6, field);
            crate::wire::write_u16(data, 10, 0);
            let sum = crate::wire::checksum::checksum(&data[..header_len]);
            crate::wire::write_u16(data, 10, sum);
            let piece = InnerHeader {
                len: header_len + len,
                later_fragment: base_offset + offset != 0,
                ..*inner
            };
            result = self.encapsulate(&mut frag, &piece, vif, now_ms, tx);
            offset += len;
        }
        self.scratch = scratch;
        result
    }

    /// Sends the packet as it is and counts it.
    pub(crate) fn deliver(
        &mut self,
        pkt: &PacketBuf<'_>,
        port: Port,
        tx: &mut impl Tx,
    ) -> Disposition {
        match port {
            Port::Underlay => self.counters.tx_underlay += 1,
            Port::Host => self.counters.tx_host += 1,
            Port::Punt => self.counters.punted += 1,
        }
        tx.transmit(port, pkt.data());
        Disposition::Sent(port)
    }

    fn count_vif_tx(&mut self, vif: VifId, bytes: usize) {
        if let Some(v) = self.vifs.get_mut(vif) {
            v.counters.tx_packets += 1;
            v.counters.tx_bytes += bytes as u64;
        }
    }

    /// Counts `reason`, then answers the sender with an ICMP error when RFC 1812 allows.
    pub(crate) fn icmp_error(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        kind: ErrorKind,
        reason: DropReason,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        self.counters.drop(reason);
        self.icmp_error_counted(pkt, inner, kind, reason, now_ms, tx)
    }

    /// As [`Node::icmp_error`] for a drop that is already counted. The error is built in
    /// the scratch buffer and forwarded like any VN packet (back to the host, or into a
    /// tunnel towards a remote sender).
    fn icmp_error_counted(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        inner: &InnerHeader,
        kind: ErrorKind,
        reason: DropReason,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Disposition {
        let dropped = Disposition::Dropped(reason);
        if inner.is_icmp_error || inner.later_fragment || is_multicast(inner.dst) {
            return dropped;
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        let out = scratch.get_mut(HEADROOM..).unwrap_or_default();
        let built = match (
            inner.src,
            self.settings.icmp_source_v4,
            self.settings.icmp_source_v6,
        ) {
            (IpAddr::V4(_), Some(me), _) => icmp::emit_v4_error(out, me, pkt.data(), kind).ok(),
            (IpAddr::V6(_), _, Some(me)) => icmp::emit_v6_error(out, me, pkt.data(), kind).ok(),
            _ => None,
        };
        if let Some(len) = built
            && let Some(mut error) = PacketBuf::new(&mut scratch, HEADROOM, len)
            && let Ok(header) = InnerHeader::parse(error.data())
        {
            self.counters.icmp_errors_sent += 1;
            // The error carries is_icmp_error, so it can never cause another error.
            let _ = self.forward(&mut error, &header, Ingress::NodeGenerated, now_ms, tx);
        }
        self.scratch = scratch;
        dropped
    }
}

/// Asks the policy engine to choose among the route's candidates (on the stack: at most
/// [`MAX_NEXT_HOPS`]). Returns the vif (or none) and whether the answer may be cached.
fn select_next_hop<P: PolicyEngine>(
    policy: &mut P,
    vifs: &crate::vif::VifTable,
    inner: &InnerHeader,
    next_hops: &[NextHop],
    now_ms: u64,
) -> (Option<VifId>, bool) {
    let mut candidates = [Candidate {
        next_hop: NextHop {
            vif: VifId(0),
            metric: 0,
            weight: 0,
        },
        up: false,
    }; MAX_NEXT_HOPS];
    let count = next_hops.len().min(MAX_NEXT_HOPS);
    for (slot, nh) in candidates.iter_mut().zip(next_hops) {
        *slot = Candidate {
            next_hop: *nh,
            up: vifs.get(nh.vif).is_some_and(|v| v.config.up),
        };
    }
    let candidates = candidates.get(..count).unwrap_or_default();
    let query = RouteQuery {
        src: inner.src,
        dst: inner.dst,
        protocol: inner.protocol,
        flow_hash: inner.flow_hash,
        candidates,
        now_ms,
    };
    let decision = policy.route_select(&query);
    let vif = decision
        .choice
        .and_then(|i| candidates.get(i))
        .map(|c| c.next_hop.vif);
    (vif, decision.cacheable)
}

fn outer_header_len(local: IpAddr) -> usize {
    if local.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    }
}

/// Writes the outer IPv4 or IPv6 header: DSCP per the vif, ECN per RFC 6040, DF per the
/// vif, and (IPv6) the inner flow hash as flow label (RFC 6438).
fn emit_outer(
    header: &mut [u8],
    vif: &Tunnel,
    inner: &InnerHeader,
    protocol: u8,
    payload_len: usize,
    ident: u16,
) -> Result<(), crate::wire::WireError> {
    let dscp = match vif.dscp {
        DscpMode::Copy => inner.tos & !0x03,
        DscpMode::Zero => 0,
    };
    let tos = dscp | ecn_encapsulate(inner.tos);
    match (vif.local, vif.remote) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
            src,
            dst,
            protocol,
            payload_len,
            ttl: vif.ttl,
            tos,
            ident,
            dont_frag: match vif.df {
                DfMode::Set => true,
                DfMode::Clear => false,
                DfMode::Copy => inner.dont_frag,
            },
        }
        .emit(header),
        (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
            src,
            dst,
            next_header: protocol,
            payload_len,
            hop_limit: vif.ttl,
            traffic_class: tos,
            flow_label: inner.flow_hash & 0x000f_ffff,
        }
        .emit(header),
        _ => Err(crate::wire::WireError::Malformed),
    }
}

/// TTL / hop limit minus one (the IPv4 header checksum is recomputed).
fn decrement_ttl(packet: &mut [u8], ipv4: bool) {
    if ipv4 {
        if let Some(ttl) = packet.get_mut(8) {
            *ttl = ttl.saturating_sub(1);
        }
        if let Ok(mut header) = ipv4::Packet::new_checked(packet) {
            header.fill_checksum();
        }
    } else if let Some(hop) = packet.get_mut(7) {
        *hop = hop.saturating_sub(1);
    }
}

fn is_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}
