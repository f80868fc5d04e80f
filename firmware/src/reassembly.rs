//! Reassembly of outer (underlay) fragments before ESP processing (RFC 4303 section 3.4.1,
//! RFC 791, RFC 8200 section 4.5).
//!
//! Memory is bounded and allocated once: a fixed number of slots, each able to hold one
//! datagram of at most `max_datagram` bytes. A datagram whose fragments do not all arrive
//! within the timeout is freed and counted. Overlapping fragments discard the datagram
//! (mandatory for IPv6 by RFC 5722; applied to IPv4 too, since an IPsec endpoint has no use
//! for overlap games).

use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::counters::DropReason;
use crate::wire::{ipv4, ipv6, write_u16};

/// Space kept in front of the payload for the unfragmentable header.
const HEADER_SPACE: usize = 64;

/// Limits of the reassembly buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReassemblyLimits {
    /// Datagrams in reassembly at once.
    pub slots: usize,
    /// Largest reassembled payload in bytes (after the IP header).
    pub max_payload: usize,
    /// Milliseconds a datagram may wait for its missing fragments.
    pub timeout_ms: u64,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            slots: 8,
            max_payload: 9216,
            timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    ident: u32,
}

#[derive(Debug)]
struct Slot {
    key: Option<FragKey>,
    started_ms: u64,
    header_len: usize,
    payload_len: Option<usize>,
    /// One bit per 8-byte unit of payload.
    received: Vec<u64>,
    data: Vec<u8>,
}

impl Slot {
    fn reset(&mut self) {
        self.key = None;
        self.header_len = 0;
        self.payload_len = None;
        self.received.fill(0);
    }

    fn units_set(&self, from: usize, to: usize) -> bool {
        (from..to).any(|u| {
            self.received
                .get(u / 64)
                .is_some_and(|w| w & (1 << (u % 64)) != 0)
        })
    }

    fn set_units(&mut self, from: usize, to: usize) {
        for u in from..to {
            if let Some(w) = self.received.get_mut(u / 64) {
                *w |= 1 << (u % 64);
            }
        }
    }

    fn complete(&self) -> bool {
        match self.payload_len {
            Some(len) if self.header_len > 0 => {
                let units = len.div_ceil(8);
                !self.units_set_all_missing(units)
            }
            _ => false,
        }
    }

    fn units_set_all_missing(&self, units: usize) -> bool {
        (0..units).any(|u| {
            self.received
                .get(u / 64)
                .is_none_or(|w| w & (1 << (u % 64)) == 0)
        })
    }
}

/// What became of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum FragmentOutcome<'a> {
    /// Held until the rest arrives.
    Held,
    /// The datagram is whole: here it is, as one unfragmented packet.
    Complete(&'a [u8]),
    /// Refused; the reason is for the counters.
    Dropped(DropReason),
}

/// The reassembly buffer.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    slots: Vec<Slot>,
}

struct Fragment<'p> {
    key: FragKey,
    /// The unfragmentable part, only from the first fragment.
    header: Option<&'p [u8]>,
    offset: usize,
    more: bool,
    payload: &'p [u8],
}

impl Reassembler {
    /// Allocates every slot up front.
    pub fn new(limits: ReassemblyLimits) -> Self {
        let slots = (0..limits.slots)
            .map(|_| Slot {
                key: None,
                started_ms: 0,
                header_len: 0,
                payload_len: None,
                received: vec![0; limits.max_payload.div_ceil(8).div_ceil(64)],
                data: vec![0; HEADER_SPACE + limits.max_payload],
            })
            .collect();
        Reassembler { limits, slots }
    }

    /// Frees datagrams older than the timeout; returns how many were freed.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut expired = 0;
        for slot in &mut self.slots {
            if slot.key.is_some() && now_ms.saturating_sub(slot.started_ms) > self.limits.timeout_ms
            {
                slot.reset();
                expired += 1;
            }
        }
        expired
    }

    /// Takes an IPv4 fragment (the packet has passed `new_checked` and its checksum).
    pub fn insert_v4(&mut self, packet: &ipv4::Packet<&[u8]>, now_ms: u64) -> FragmentOutcome<'_> {
        let fragment = Fragment {
            key: FragKey {
                src: IpAddr::V4(packet.src()),
                dst: IpAddr::V4(packet.dst()),
                protocol: packet.protocol(),
                ident: u32::from(packet.ident()),
            },
            header: (packet.frag_offset() == 0).then(|| packet.header()),
            offset: packet.frag_offset(),
            more: packet.more_frags(),
            payload: packet.payload(),
        };
        self.insert(fragment, now_ms, finish_v4)
    }

    /// Takes an IPv6 fragment. Only a fragment header that directly follows the fixed
    /// header is supported (what tunnel endpoints send); other chains are malformed here.
    pub fn insert_v6(
        &mut self,
        packet: &ipv6::Packet<&[u8]>,
        frag: ipv6::FragmentHeader,
        now_ms: u64,
    ) -> FragmentOutcome<'_> {
        if frag.header_offset != ipv6::HEADER_LEN {
            return FragmentOutcome::Dropped(DropReason::Malformed);
        }
        let bytes = packet.payload();
        // The fragment header's own next-header byte tells what the payload is.
        let Some(&next) = bytes.first() else {
            return FragmentOutcome::Dropped(DropReason::Malformed);
        };
        let fragment = Fragment {
            key: FragKey {
                src: IpAddr::V6(packet.src()),
                dst: IpAddr::V6(packet.dst()),
                protocol: next,
                ident: frag.ident,
            },
            header: (frag.frag_offset == 0).then(|| packet.fixed_header()),
            offset: frag.frag_offset,
            more: frag.more_frags,
            payload: bytes.get(8..).unwrap_or_default(),
        };
        self.insert(fragment, now_ms, finish_v6)
    }

    fn insert(
        &mut self,
        f: Fragment<'_>,
        now_ms: u64,
        finish: fn(&mut [u8], usize, u8),
    ) -> FragmentOutcome<'_> {
        let end = f.offset + f.payload.len();
        // Every fragment but the last carries a non-empty multiple of 8 bytes.
        if f.more && (f.payload.is_empty() || !f.payload.len().is_multiple_of(8)) {
            return FragmentOutcome::Dropped(DropReason::Malformed);
        }
        if end > self.limits.max_payload {
            self.forget(&f.key);
            return FragmentOutcome::Dropped(DropReason::FragmentTooBig);
        }
        let index = match self.slots.iter().position(|s| s.key == Some(f.key)) {
            Some(i) => i,
            None => match self.slots.iter().position(|s| s.key.is_none()) {
                Some(i) => {
                    let slot = &mut self.slots[i];
                    slot.key = Some(f.key);
                    slot.started_ms = now_ms;
                    i
                }
                None => return FragmentOutcome::Dropped(DropReason::ReassemblyFull),
            },
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return FragmentOutcome::Dropped(DropReason::ReassemblyFull);
        };
        let (first_unit, last_unit) = (f.offset / 8, end.div_ceil(8));
        let conflicting_end = match (f.more, slot.payload_len) {
            (false, Some(len)) => len != end,
            (true, Some(len)) => end > len,
            _ => false,
        };
        if slot.units_set(first_unit, last_unit) || conflicting_end {
            slot.reset();
            return FragmentOutcome::Dropped(DropReason::FragmentOverlap);
        }
        if let Some(dst) = slot
            .data
            .get_mut(HEADER_SPACE + f.offset..HEADER_SPACE + end)
        {
            dst.copy_from_slice(f.payload);
        }
        slot.set_units(first_unit, last_unit);
        if !f.more {
            slot.payload_len = Some(end);
        }
        if let Some(header) = f.header {
            if header.len() > HEADER_SPACE {
                slot.reset();
                return FragmentOutcome::Dropped(DropReason::Malformed);
            }
            if let Some(dst) = slot.data.get_mut(HEADER_SPACE - header.len()..HEADER_SPACE) {
                dst.copy_from_slice(header);
            }
            slot.header_len = header.len();
        }
        if !slot.complete() {
            return FragmentOutcome::Held;
        }
        let payload_len = slot.payload_len.unwrap_or(0);
        let start = HEADER_SPACE - slot.header_len;
        let protocol = f.key.protocol;
        slot.reset();
        match slot.data.get_mut(start..HEADER_SPACE + payload_len) {
            Some(datagram) => {
                finish(datagram, payload_len, protocol);
                FragmentOutcome::Complete(datagram)
            }
            None => FragmentOutcome::Dropped(DropReason::Malformed),
        }
    }

    fn forget(&mut self, key: &FragKey) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.key == Some(*key)) {
            slot.reset();
        }
    }
}

/// Rewrites the first fragment's IPv4 header into that of the whole datagram.
fn finish_v4(datagram: &mut [u8], payload_len: usize, _protocol: u8) {
    let header_len = usize::from(datagram.first().copied().unwrap_or(0) & 0x0f) * 4;
    write_u16(datagram, 2, (header_len + payload_len) as u16);
    // Clear MF and the offset, keep DF.
    let flags = crate::wire::read_u16(datagram, 6) & 0x4000;
    write_u16(datagram, 6, flags);
    write_u16(datagram, 10, 0);
    let sum = datagram
        .get(..header_len)
        .map_or(0, crate::wire::checksum::checksum);
    write_u16(datagram, 10, sum);
}

/// Rewrites the fixed IPv6 header: payload length, and the next header that the removed
/// fragment header carried.
fn finish_v6(datagram: &mut [u8], payload_len: usize, protocol: u8) {
    write_u16(datagram, 4, payload_len as u16);
    if let Some(b) = datagram.get_mut(6) {
        *b = protocol;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto;
    use core::net::Ipv4Addr;
    use std::vec::Vec;

    /// Splits one IPv4 datagram into fragments of `chunk` payload bytes, as RFC 791 does.
    fn fragments(payload: &[u8], chunk: usize, ident: u16) -> Vec<Vec<u8>> {
        payload
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let mut pkt = std::vec![0u8; 20 + part.len()];
                ipv4::Repr {
                    src: Ipv4Addr::new(192, 0, 2, 1),
                    dst: Ipv4Addr::new(192, 0, 2, 2),
                    protocol: proto::ESP,
                    payload_len: part.len(),
                    ttl: 64,
                    tos: 0,
                    ident,
                    dont_frag: false,
                }
                .emit(&mut pkt)
                .unwrap();
                let more = (i + 1) * chunk < payload.len();
                let field = ((i * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
                pkt[6..8].copy_from_slice(&field.to_be_bytes());
                pkt[10..12].fill(0);
                let sum = crate::wire::checksum::checksum(&pkt[..20]);
                pkt[10..12].copy_from_slice(&sum.to_be_bytes());
                pkt[20..].copy_from_slice(part);
                pkt
            })
            .collect()
    }

    fn insert<'a>(r: &'a mut Reassembler, frag: &'a [u8], now: u64) -> FragmentOutcome<'a> {
        let p = ipv4::Packet::new_checked(frag).unwrap();
        r.insert_v4(&p, now)
    }

    #[test]
    fn reassembles_out_of_order() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let frags = fragments(&payload, 1480, 7);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        assert_eq!(insert(&mut r, &frags[2], 0), FragmentOutcome::Held);
        assert_eq!(insert(&mut r, &frags[0], 0), FragmentOutcome::Held);
        let FragmentOutcome::Complete(whole) = insert(&mut r, &frags[1], 0) else {
            panic!("not complete");
        };
        let p = ipv4::Packet::new_checked(whole).unwrap();
        assert!(p.verify_checksum());
        assert!(!p.is_fragment());
        assert_eq!(p.payload(), &payload[..]);
    }

    #[test]
    fn overlap_discards_the_datagram() {
        let payload = [0u8; 64];
        let frags = fragments(&payload, 32, 9);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        assert_eq!(insert(&mut r, &frags[0], 0), FragmentOutcome::Held);
        assert_eq!(
            insert(&mut r, &frags[0], 0),
            FragmentOutcome::Dropped(DropReason::FragmentOverlap)
        );
    }

    #[test]
    fn bounded_slots_and_timeout() {
        let limits = ReassemblyLimits {
            slots: 1,
            max_payload: 2048,
            timeout_ms: 100,
        };
        let mut r = Reassembler::new(limits);
        let a = fragments(&[0u8; 64], 32, 1);
        let b = fragments(&[0u8; 64], 32, 2);
        assert_eq!(insert(&mut r, &a[0], 0), FragmentOutcome::Held);
        assert_eq!(
            insert(&mut r, &b[0], 50),
            FragmentOutcome::Dropped(DropReason::ReassemblyFull)
        );
        assert_eq!(r.expire(200), 1);
        assert_eq!(insert(&mut r, &b[0], 200), FragmentOutcome::Held);
        let big = fragments(&[0u8; 4096], 1024, 3);
        assert_eq!(
            insert(&mut r, &big[3], 200),
            FragmentOutcome::Dropped(DropReason::FragmentTooBig)
        );
    }
}
