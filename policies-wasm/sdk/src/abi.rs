//! ABI v1 layouts, shared by both sides: the firmware's policy host encodes queries and
//! decodes decisions with these functions, modules do the reverse. One definition, so the
//! two sides cannot drift apart. See `docs/policy-abi.md` for the prose specification.
//!
//! Everything is little-endian at fixed offsets inside the module's 256-byte query buffer:
//! the query at offset 0, the decision the module writes at [`DECISION_OFFSET`].

/// Major version: a host serves exactly one major.
pub const ABI_MAJOR: u16 = 1;
/// Minor version: additions a module may rely on; a host serves every minor up to its own.
pub const ABI_MINOR: u16 = 0;

/// What `iipnic_abi_version` returns for this SDK.
pub const fn abi_version() -> u32 {
    (ABI_MAJOR as u32) << 16 | ABI_MINOR as u32
}

/// Size of the query buffer the module exports through `iipnic_query_buffer`.
pub const QUERY_BUFFER_LEN: usize = 256;
/// Where the module writes its decision.
pub const DECISION_OFFSET: usize = 128;
/// Largest configuration blob a host hands to `iipnic_init`.
pub const MAX_CONFIG_LEN: usize = 16 * 1024;
/// Most candidates in a route query.
pub const MAX_CANDIDATES: usize = 8;

/// Names of the exports and imports.
pub mod names {
    /// `() -> i32`: `(major << 16) | minor`.
    pub const ABI_VERSION: &str = "iipnic_abi_version";
    /// `() -> i32`: address of the query buffer.
    pub const QUERY_BUFFER: &str = "iipnic_query_buffer";
    /// `(len: i32) -> i32`: address of `len` bytes for the config blob, 0 if too large.
    pub const CONFIG_BUFFER: &str = "iipnic_config_buffer";
    /// `(len: i32) -> i32`: read the config blob; 0 on success.
    pub const INIT: &str = "iipnic_init";
    /// `() -> i32`: 0 when the module's own checks pass.
    pub const SELF_TEST: &str = "iipnic_self_test";
    /// `() -> i32`: answer the SPD query in the buffer; 0 when a decision was written.
    pub const SPD_DECIDE: &str = "spd_decide";
    /// `() -> i32`: answer the route query in the buffer; 0 when a decision was written.
    pub const ROUTE_SELECT: &str = "route_select";
    /// The linear memory.
    pub const MEMORY: &str = "memory";
    /// Module name of every import.
    pub const IMPORT_MODULE: &str = "iipnic";
    /// `(level: i32, ptr: i32, len: i32)`: a UTF-8 log line.
    pub const LOG: &str = "log";
    /// `() -> i64`: node time in milliseconds.
    pub const NOW_MS: &str = "now_ms";
}

/// Log levels for the `log` import.
pub mod level {
    /// Something is wrong.
    pub const ERROR: i32 = 1;
    /// Worth knowing.
    pub const INFO: i32 = 3;
    /// Detail.
    pub const DEBUG: i32 = 4;
}

fn get<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at + N)?.try_into().ok()
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Option<()> {
    buf.get_mut(at..at + bytes.len())?.copy_from_slice(bytes);
    Some(())
}

/// An IPv4 or IPv6 address as 16 bytes (IPv4 in the first four) plus its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    /// 4 or 6.
    pub family: u8,
    /// The address bytes; IPv4 uses the first four, the rest are zero.
    pub bytes: [u8; 16],
}

impl Addr {
    /// An IPv4 address.
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut bytes = [0; 16];
        bytes[0] = octets[0];
        bytes[1] = octets[1];
        bytes[2] = octets[2];
        bytes[3] = octets[3];
        Addr { family: 4, bytes }
    }

    /// An IPv6 address.
    pub const fn v6(bytes: [u8; 16]) -> Self {
        Addr { family: 6, bytes }
    }

    /// True when the first `len` bits equal those of `prefix` (same family).
    pub fn in_prefix(&self, prefix: &Addr, len: u8) -> bool {
        if self.family != prefix.family {
            return false;
        }
        let width = if self.family == 4 { 32 } else { 128 };
        let len = usize::from(len.min(width));
        let (full, rest) = (len / 8, len % 8);
        if self.bytes.get(..full) != prefix.bytes.get(..full) {
            return false;
        }
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        match (self.bytes.get(full), prefix.bytes.get(full)) {
            (Some(a), Some(b)) => a & mask == b & mask,
            _ => false,
        }
    }
}

/// Which way a tunnel packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by this node.
    Outbound = 0,
    /// Received by this node.
    Inbound = 1,
}

/// SPD query: the tunnel-header selectors (offsets 0..36).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpdQuery {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Next protocol of the tunnel packet (4 or 41).
    pub protocol: u8,
    /// Inbound: arrived under ESP.
    pub protected: bool,
    /// Outer source.
    pub src: Addr,
    /// Outer destination.
    pub dst: Addr,
}

impl SpdQuery {
    /// Writes the query at the start of `buf`.
    pub fn encode(&self, buf: &mut [u8]) -> Option<()> {
        put(
            buf,
            0,
            &[
                self.direction as u8,
                self.src.family,
                self.protocol,
                u8::from(self.protected),
            ],
        )?;
        put(buf, 4, &self.src.bytes)?;
        put(buf, 20, &self.dst.bytes)
    }

    /// Reads a query; `None` when a field holds an impossible value.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let [direction, family, protocol, flags] = get::<4>(buf, 0)?;
        let direction = match direction {
            0 => Direction::Outbound,
            1 => Direction::Inbound,
            _ => return None,
        };
        if family != 4 && family != 6 {
            return None;
        }
        Some(SpdQuery {
            direction,
            protocol,
            protected: flags & 1 != 0,
            src: Addr {
                family,
                bytes: get(buf, 4)?,
            },
            dst: Addr {
                family,
                bytes: get(buf, 20)?,
            },
        })
    }
}

/// What to do with the tunnel packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpdAction {
    /// Drop it.
    Discard,
    /// Pass in clear.
    Bypass,
    /// Apply ESP; outbound decisions name the SA (an id, never a key).
    Protect {
        /// The SA, when the decision names one.
        sa: Option<u32>,
    },
}

/// The answer to an SPD query (offsets 128..140 of the buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpdDecision {
    /// What to do.
    pub action: SpdAction,
    /// The rule that decided, for counters and logs.
    pub entry: Option<u32>,
    /// May the node cache this answer until the next policy change?
    pub cacheable: bool,
}

impl SpdDecision {
    /// Writes the decision at [`DECISION_OFFSET`].
    pub fn encode(&self, buf: &mut [u8]) -> Option<()> {
        let (action, sa) = match self.action {
            SpdAction::Discard => (0u8, None),
            SpdAction::Bypass => (1, None),
            SpdAction::Protect { sa } => (2, sa),
        };
        let flags = u8::from(self.cacheable)
            | u8::from(sa.is_some()) << 1
            | u8::from(self.entry.is_some()) << 2;
        put(buf, DECISION_OFFSET, &[action, flags, 0, 0])?;
        put(buf, DECISION_OFFSET + 4, &sa.unwrap_or(0).to_le_bytes())?;
        put(
            buf,
            DECISION_OFFSET + 8,
            &self.entry.unwrap_or(0).to_le_bytes(),
        )
    }

    /// Reads a decision; `None` for an unknown action or reserved bits set.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let [action, flags, r0, r1] = get::<4>(buf, DECISION_OFFSET)?;
        if flags & !0b111 != 0 || r0 != 0 || r1 != 0 {
            return None;
        }
        let sa = (flags & 0b010 != 0)
            .then(|| get::<4>(buf, DECISION_OFFSET + 4).map(u32::from_le_bytes));
        let entry = (flags & 0b100 != 0)
            .then(|| get::<4>(buf, DECISION_OFFSET + 8).map(u32::from_le_bytes));
        let action = match action {
            0 => SpdAction::Discard,
            1 => SpdAction::Bypass,
            2 => SpdAction::Protect { sa: sa.flatten() },
            _ => return None,
        };
        Some(SpdDecision {
            action,
            entry: entry.flatten(),
            cacheable: flags & 1 != 0,
        })
    }
}

/// One candidate next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Candidate {
    /// Vif id.
    pub vif: u16,
    /// Link state.
    pub up: bool,
    /// Lower is preferred.
    pub metric: u32,
    /// ECMP weight.
    pub weight: u32,
}

/// Route query (offsets 0..136): the inner flow and the route's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteQuery {
    /// Inner protocol.
    pub protocol: u8,
    /// Hash of the inner 5-tuple.
    pub flow_hash: u32,
    /// Inner source.
    pub src: Addr,
    /// Inner destination.
    pub dst: Addr,
    count: u8,
    candidates: [Candidate; MAX_CANDIDATES],
}

const CANDIDATES_AT: usize = 40;
const CANDIDATE_LEN: usize = 11;

impl RouteQuery {
    /// A query; at most [`MAX_CANDIDATES`] candidates are kept.
    pub fn new(
        protocol: u8,
        flow_hash: u32,
        src: Addr,
        dst: Addr,
        candidates: &[Candidate],
    ) -> Self {
        let mut all = [Candidate::default(); MAX_CANDIDATES];
        let count = candidates.len().min(MAX_CANDIDATES);
        for (slot, c) in all.iter_mut().zip(candidates) {
            *slot = *c;
        }
        RouteQuery {
            protocol,
            flow_hash,
            src,
            dst,
            count: count as u8,
            candidates: all,
        }
    }

    /// Candidates, best metric first.
    pub fn candidates(&self) -> &[Candidate] {
        self.candidates
            .get(..usize::from(self.count))
            .unwrap_or_default()
    }

    /// Writes the query at the start of `buf`.
    pub fn encode(&self, buf: &mut [u8]) -> Option<()> {
        put(buf, 0, &[self.src.family, self.protocol, self.count, 0])?;
        put(buf, 4, &self.flow_hash.to_le_bytes())?;
        put(buf, 8, &self.src.bytes)?;
        put(buf, 24, &self.dst.bytes)?;
        for (i, c) in self.candidates().iter().enumerate() {
            let at = CANDIDATES_AT + i * CANDIDATE_LEN;
            put(buf, at, &c.vif.to_le_bytes())?;
            put(buf, at + 2, &[u8::from(c.up)])?;
            put(buf, at + 3, &c.metric.to_le_bytes())?;
            put(buf, at + 7, &c.weight.to_le_bytes())?;
        }
        Some(())
    }

    /// Reads a query; `None` when a field holds an impossible value.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let [family, protocol, count, _] = get::<4>(buf, 0)?;
        if (family != 4 && family != 6) || usize::from(count) > MAX_CANDIDATES {
            return None;
        }
        let mut candidates = [Candidate::default(); MAX_CANDIDATES];
        for (i, c) in candidates.iter_mut().enumerate().take(usize::from(count)) {
            let at = CANDIDATES_AT + i * CANDIDATE_LEN;
            *c = Candidate {
                vif: u16::from_le_bytes(get(buf, at)?),
                up: get::<1>(buf, at + 2)?[0] != 0,
                metric: u32::from_le_bytes(get(buf, at + 3)?),
                weight: u32::from_le_bytes(get(buf, at + 7)?),
            };
        }
        Some(RouteQuery {
            protocol,
            flow_hash: u32::from_le_bytes(get(buf, 4)?),
            src: Addr {
                family,
                bytes: get(buf, 8)?,
            },
            dst: Addr {
                family,
                bytes: get(buf, 24)?,
            },
            count,
            candidates,
        })
    }
}

/// The answer to a route query (offsets 128..130).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteDecision {
    /// Index of the chosen candidate; `None`: no usable route.
    pub choice: Option<u8>,
    /// May the node cache this answer for the flow until the next policy change?
    pub cacheable: bool,
}

impl RouteDecision {
    /// Use candidate `index`, cacheable.
    pub const fn use_candidate(index: u8) -> Self {
        RouteDecision {
            choice: Some(index),
            cacheable: true,
        }
    }

    /// No usable candidate.
    pub const NO_ROUTE: RouteDecision = RouteDecision {
        choice: None,
        cacheable: true,
    };

    /// Writes the decision at [`DECISION_OFFSET`].
    pub fn encode(&self, buf: &mut [u8]) -> Option<()> {
        put(
            buf,
            DECISION_OFFSET,
            &[self.choice.unwrap_or(0xff), u8::from(self.cacheable)],
        )
    }

    /// Reads a decision; `None` when reserved bits are set.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let [choice, flags] = get::<2>(buf, DECISION_OFFSET)?;
        if flags & !1 != 0 {
            return None;
        }
        Some(RouteDecision {
            choice: (choice != 0xff).then_some(choice),
            cacheable: flags & 1 != 0,
        })
    }
}

/// One rule of the `spd-rules` module's configuration: an RFC 4301 SPD entry on the tunnel
/// header. The blob is `u32 count` followed by `count` rules of [`SpdRule::LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpdRule {
    /// Entry id reported in decisions.
    pub id: u32,
    /// Outbound or inbound.
    pub direction: Direction,
    /// Next protocol, or `None` for any.
    pub protocol: Option<u8>,
    /// Outer source prefix.
    pub src: Addr,
    /// Its length in bits.
    pub src_len: u8,
    /// Outer destination prefix.
    pub dst: Addr,
    /// Its length in bits.
    pub dst_len: u8,
    /// What a match does.
    pub action: SpdAction,
}

impl SpdRule {
    /// Encoded size of one rule.
    pub const LEN: usize = 48;

    /// True when the query falls inside the rule's selectors.
    pub fn matches(&self, q: &SpdQuery) -> bool {
        self.direction == q.direction
            && q.src.in_prefix(&self.src, self.src_len)
            && q.dst.in_prefix(&self.dst, self.dst_len)
            && self.protocol.is_none_or(|p| p == q.protocol)
    }

    /// Writes the rule into `out` (at least [`SpdRule::LEN`] bytes).
    pub fn encode(&self, out: &mut [u8]) -> Option<()> {
        let (action, sa) = match self.action {
            SpdAction::Discard => (0u8, None),
            SpdAction::Bypass => (1, None),
            SpdAction::Protect { sa } => (2, sa),
        };
        let flags = u8::from(self.protocol.is_some()) | u8::from(sa.is_some()) << 1;
        put(out, 0, &self.id.to_le_bytes())?;
        put(
            out,
            4,
            &[
                self.direction as u8,
                self.src.family,
                self.protocol.unwrap_or(0),
                flags,
            ],
        )?;
        put(out, 8, &self.src.bytes)?;
        put(out, 24, &[self.src_len, self.dst_len, action, 0])?;
        put(out, 28, &self.dst.bytes)?;
        put(out, 44, &sa.unwrap_or(0).to_le_bytes())
    }

    /// Reads one rule.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let [direction, family, protocol, flags] = get::<4>(buf, 4)?;
        let [src_len, dst_len, action, _] = get::<4>(buf, 24)?;
        let width = match family {
            4 => 32,
            6 => 128,
            _ => return None,
        };
        if src_len > width || dst_len > width {
            return None;
        }
        let sa = (flags & 2 != 0)
            .then(|| get::<4>(buf, 44).map(u32::from_le_bytes))
            .flatten();
        Some(SpdRule {
            id: u32::from_le_bytes(get(buf, 0)?),
            direction: match direction {
                0 => Direction::Outbound,
                1 => Direction::Inbound,
                _ => return None,
            },
            protocol: (flags & 1 != 0).then_some(protocol),
            src: Addr {
                family,
                bytes: get(buf, 8)?,
            },
            src_len,
            dst: Addr {
                family,
                bytes: get(buf, 28)?,
            },
            dst_len,
            action: match action {
                0 => SpdAction::Discard,
                1 => SpdAction::Bypass,
                2 => SpdAction::Protect { sa },
                _ => return None,
            },
        })
    }

    /// Iterates the rules of a blob; `None` items mark malformed rules.
    pub fn decode_all(blob: &[u8]) -> Option<impl Iterator<Item = Option<SpdRule>> + '_> {
        let count = usize::try_from(u32::from_le_bytes(get(blob, 0)?)).ok()?;
        let body = blob.get(4..)?;
        if body.len() != count.checked_mul(Self::LEN)? {
            return None;
        }
        Some(body.chunks_exact(Self::LEN).map(SpdRule::decode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spd_query_and_decision_round_trip() {
        let q = SpdQuery {
            direction: Direction::Inbound,
            protocol: 41,
            protected: true,
            src: Addr::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            dst: Addr::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        };
        let mut buf = [0u8; QUERY_BUFFER_LEN];
        q.encode(&mut buf).unwrap();
        assert_eq!(SpdQuery::decode(&buf), Some(q));
        let d = SpdDecision {
            action: SpdAction::Protect { sa: Some(7) },
            entry: Some(3),
            cacheable: true,
        };
        d.encode(&mut buf).unwrap();
        assert_eq!(
            &buf[DECISION_OFFSET..DECISION_OFFSET + 4],
            &[2, 0b111, 0, 0]
        );
        assert_eq!(SpdDecision::decode(&buf), Some(d));
        buf[DECISION_OFFSET] = 9;
        assert_eq!(SpdDecision::decode(&buf), None);
    }

    #[test]
    fn route_query_round_trip() {
        let cands = [
            Candidate {
                vif: 2,
                up: true,
                metric: 10,
                weight: 3,
            },
            Candidate {
                vif: 5,
                up: false,
                metric: 20,
                weight: 1,
            },
        ];
        let q = RouteQuery::new(
            17,
            0xabcd,
            Addr::v4([10, 0, 0, 1]),
            Addr::v4([10, 1, 0, 1]),
            &cands,
        );
        let mut buf = [0u8; QUERY_BUFFER_LEN];
        q.encode(&mut buf).unwrap();
        assert_eq!(RouteQuery::decode(&buf), Some(q));
        assert_eq!(RouteQuery::decode(&buf).unwrap().candidates(), &cands);
        RouteDecision::use_candidate(1).encode(&mut buf).unwrap();
        assert_eq!(
            RouteDecision::decode(&buf),
            Some(RouteDecision::use_candidate(1))
        );
    }

    #[test]
    fn prefixes() {
        let a = Addr::v4([10, 1, 2, 3]);
        assert!(a.in_prefix(&Addr::v4([10, 1, 0, 0]), 16));
        assert!(a.in_prefix(&Addr::v4([10, 0, 0, 0]), 15));
        assert!(!a.in_prefix(&Addr::v4([10, 2, 0, 0]), 16));
        assert!(a.in_prefix(&Addr::v4([0, 0, 0, 0]), 0));
        assert!(!a.in_prefix(&Addr::v6([0; 16]), 0));
    }

    #[test]
    fn rules_round_trip() {
        let rule = SpdRule {
            id: 4,
            direction: Direction::Outbound,
            protocol: Some(4),
            src: Addr::v4([192, 0, 2, 1]),
            src_len: 32,
            dst: Addr::v4([192, 0, 2, 0]),
            dst_len: 24,
            action: SpdAction::Protect { sa: Some(1) },
        };
        let mut blob = [0u8; 4 + SpdRule::LEN];
        blob[..4].copy_from_slice(&1u32.to_le_bytes());
        rule.encode(&mut blob[4..]).unwrap();
        let rules: Option<Vec<SpdRule>> = SpdRule::decode_all(&blob).unwrap().collect();
        assert_eq!(rules.unwrap(), vec![rule]);
        assert!(SpdRule::decode_all(&blob[..20]).is_none());
    }
}
