//! Counters: every packet the node does not forward is counted under a [`DropReason`].

use serde::Serialize;

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// Why a packet was not forwarded. Each reason is its own counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = DropReason::ALL.len();

            /// The counter's name, as printed by the CLI and in JSON.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One line that explains the reason.
            pub const fn description(self) -> &'static str {
                match self { $(DropReason::$variant => concat!($($doc),*),)* }
            }
        }
    };
}

drop_reasons! {
    /// A header failed validation (version, lengths, extension-header chain).
    Malformed => "malformed",
    /// The IPv4 header checksum did not verify.
    BadChecksum => "bad_checksum",
    /// An underlay packet addressed to none of this node's underlay addresses.
    NotForUs => "not_for_us",
    /// The packet does not fit the buffer's headroom or tailroom for encapsulation.
    NoBufferRoom => "no_buffer_room",
    /// A fragment overlapped one already held (RFC 5722 forbids overlaps for IPv6).
    FragmentOverlap => "fragment_overlap",
    /// A datagram's fragments did not all arrive before the reassembly timeout.
    FragmentTimeout => "fragment_timeout",
    /// A reassembled datagram would exceed the reassembly buffer.
    FragmentTooBig => "fragment_too_big",
    /// Every reassembly slot was busy, so a new datagram could not be started.
    ReassemblyFull => "reassembly_full",
    /// No inbound SA has this SPI and destination (RFC 4303 section 3.4.2).
    UnknownSpi => "unknown_spi",
    /// The ESP packet is too short for header, IV, trailer and ICV.
    TruncatedEsp => "truncated_esp",
    /// Sequence number zero, which a sender never uses.
    SequenceZero => "sequence_zero",
    /// A duplicate, or a number left of the anti-replay window (RFC 4303 section 3.4.3).
    Replay => "replay",
    /// The ICV did not verify (RFC 4303 section 3.4.4).
    AuthFailed => "auth_failed",
    /// Pad length past the payload, or padding bytes other than 1, 2, 3, ...
    BadPadding => "bad_padding",
    /// An ESP next header other than 4 (IPv4) or 41 (IPv6) on an IIPtran SA.
    BadNextHeader => "bad_next_header",
    /// An ESP dummy packet (next header 59), discarded as RFC 4303 section 2.6 requires.
    DummyPacket => "dummy_packet",
    /// The SA passed a hard lifetime (bytes, packets or time).
    SaExpired => "sa_expired",
    /// The outbound sequence number would wrap; the SA must be rekeyed (RFC 4303 3.3.3).
    SeqExhausted => "seq_exhausted",
    /// An SPD entry with action DISCARD matched.
    SpdDiscard => "spd_discard",
    /// The policy said PROTECT with an SA that is not installed.
    PolicyUnknownSa => "policy_unknown_sa",
    /// Plaintext IPIP from a peer whose tunnel traffic must arrive protected.
    PlaintextFromProtectedPeer => "plaintext_from_protected_peer",
    /// A decrypted tunnel packet did not match the selectors of the SA that carried it.
    InboundPolicyMismatch => "inbound_policy_mismatch",
    /// No virtual interface joins this tunnel packet's outer source and destination.
    NoVif => "no_vif",
    /// The virtual interface is administratively or operationally down.
    VifDown => "vif_down",
    /// The inner packet is not valid IPv4 (next header 4) or IPv6 (next header 41).
    InnerMalformed => "inner_malformed",
    /// Outer CE on a Not-ECT inner packet: RFC 6040 section 4.2 requires a drop.
    EcnDrop => "ecn_drop",
    /// The inner source failed the ingress (uRPF) check of the vif it arrived on.
    UrpfFailed => "urpf_failed",
    /// No VN route for the destination.
    NoRoute => "no_route",
    /// The route is a blackhole.
    Blackhole => "blackhole",
    /// The route-selection policy found no usable next hop.
    NoNextHop => "no_next_hop",
    /// TTL or hop limit expired in transit.
    TtlExceeded => "ttl_exceeded",
    /// Larger than the tunnel MTU with DF set (or IPv6): answered with ICMP too-big.
    TooBig => "too_big",
    /// The encapsulated packet would exceed the underlay MTU.
    UnderlayMtuExceeded => "underlay_mtu_exceeded",
}

/// Node-wide counters.
#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// Packets received from the host (VN) side.
    pub rx_host: u64,
    /// Packets received from the underlay.
    pub rx_underlay: u64,
    /// Packets delivered to the host side.
    pub tx_host: u64,
    /// Packets sent on the underlay.
    pub tx_underlay: u64,
    /// Packets handed to the host's control plane (IKE, ICMP to the node, local VN addresses).
    pub punted: u64,
    /// ICMP/ICMPv6 errors generated.
    pub icmp_errors_sent: u64,
    /// Datagrams rebuilt from outer fragments.
    pub reassembled: u64,
    /// SPD cache hits and misses (misses ask the policy engine).
    pub spd_cache_hits: u64,
    /// SPD cache misses.
    pub spd_cache_misses: u64,
    /// Route-selection cache hits (no policy call).
    pub route_cache_hits: u64,
    /// Route-selection cache misses (the policy engine chose).
    pub route_cache_misses: u64,
    /// SA events lost because the event queue was full.
    pub events_lost: u64,
    /// Drops, indexed by `DropReason as usize`.
    #[serde(skip)]
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx_host: 0,
            rx_underlay: 0,
            tx_host: 0,
            tx_underlay: 0,
            punted: 0,
            icmp_errors_sent: 0,
            reassembled: 0,
            spd_cache_hits: 0,
            spd_cache_misses: 0,
            route_cache_hits: 0,
            route_cache_misses: 0,
            events_lost: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl Counters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason as usize) {
            *c += 1;
        }
    }

    /// Drops counted under `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The non-zero drop counters with their names.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.drops(r)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Traffic counters of one virtual interface or SA.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Packets sent (encapsulated) or, for an inbound SA, accepted.
    pub tx_packets: u64,
    /// Bytes of those packets (inner bytes for vifs, ESP payload bytes for SAs).
    pub tx_bytes: u64,
    /// Packets received (decapsulated).
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets dropped while tied to this vif or SA.
    pub drops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_documented() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            assert!(!a.description().is_empty());
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
