//! The guest side of the iipnic policy ABI (draft v0; `docs/policy-abi.md`).
//!
//! A module answers questions the firmware asks on a cache miss. The host writes a query
//! into the module's query buffer (little-endian, fixed offsets) and calls an export; the
//! answer is a plain integer. This crate hides the layout: a route-selection policy is a
//! function from [`RouteQuery`] to [`RouteDecision`], exported with [`route_policy!`].
#![cfg_attr(not(test), no_std)]

/// A panic inside a module traps: the host counts the trap and applies the slot's
/// failure policy. Only on wasm32, so host tests keep std's handler.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// ABI version this SDK speaks: major in the high 16 bits, minor in the low 16 bits.
pub const ABI_VERSION: u32 = 1; // 0.1: major 0, minor 1

/// Size of the query buffer the module exports.
pub const QUERY_BUFFER_LEN: usize = 256;
/// Most candidates a route query carries.
pub const MAX_CANDIDATES: usize = 8;

/// Byte offsets of a route query in the query buffer.
pub mod route_layout {
    /// u8: 4 or 6.
    pub const FAMILY: usize = 0;
    /// u8: inner protocol.
    pub const PROTOCOL: usize = 1;
    /// u8: number of candidates (at most 8).
    pub const CANDIDATE_COUNT: usize = 2;
    /// u32: flow hash.
    pub const FLOW_HASH: usize = 4;
    /// 16 bytes: source address (IPv4 in the first four).
    pub const SRC: usize = 8;
    /// 16 bytes: destination address.
    pub const DST: usize = 24;
    /// Candidates start here, [`CANDIDATE_LEN`] bytes each.
    pub const CANDIDATES: usize = 40;
    /// Per candidate: u16 vif id, u8 up, u8 reserved, u32 metric, u32 weight.
    pub const CANDIDATE_LEN: usize = 12;
}

/// One candidate next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// A route-selection question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteQuery {
    /// 4 or 6.
    pub family: u8,
    /// Inner protocol.
    pub protocol: u8,
    /// Hash of the inner flow.
    pub flow_hash: u32,
    /// Inner source (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Inner destination.
    pub dst: [u8; 16],
    count: usize,
    candidates: [Candidate; MAX_CANDIDATES],
}

impl RouteQuery {
    /// Candidates, best metric first.
    pub fn candidates(&self) -> &[Candidate] {
        self.candidates.get(..self.count).unwrap_or_default()
    }

    /// Decodes a query; `None` if the buffer is shorter than the layout says.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        use route_layout::*;
        let u32_at = |at: usize| Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?));
        let count = usize::from(*buf.get(CANDIDATE_COUNT)?).min(MAX_CANDIDATES);
        let mut candidates = [Candidate::default(); MAX_CANDIDATES];
        for (i, c) in candidates.iter_mut().enumerate().take(count) {
            let at = CANDIDATES + i * CANDIDATE_LEN;
            *c = Candidate {
                vif: u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?),
                up: *buf.get(at + 2)? != 0,
                metric: u32_at(at + 4)?,
                weight: u32_at(at + 8)?,
            };
        }
        Some(RouteQuery {
            family: *buf.get(FAMILY)?,
            protocol: *buf.get(PROTOCOL)?,
            flow_hash: u32_at(FLOW_HASH)?,
            src: buf.get(SRC..SRC + 16)?.try_into().ok()?,
            dst: buf.get(DST..DST + 16)?.try_into().ok()?,
            count,
            candidates,
        })
    }
}

/// A route-selection answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDecision {
    /// Use candidate `index`.
    Use(u8),
    /// No candidate is usable.
    NoRoute,
}

impl RouteDecision {
    /// The integer returned across the ABI: the index, or -1.
    pub fn encode(self) -> i32 {
        match self {
            RouteDecision::Use(i) => i32::from(i),
            RouteDecision::NoRoute => -1,
        }
    }
}

/// Exports a route-selection policy: `route_policy!(my_fn)` where
/// `fn my_fn(&RouteQuery) -> RouteDecision`. Also exports the ABI version marker and the
/// query buffer.
#[macro_export]
macro_rules! route_policy {
    ($policy:path) => {
        static mut IIPNIC_QUERY: [u8; $crate::QUERY_BUFFER_LEN] = [0; $crate::QUERY_BUFFER_LEN];

        /// ABI version marker the host checks before instantiating.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// Where the host writes each query.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_query_buffer() -> *mut u8 {
            core::ptr::addr_of_mut!(IIPNIC_QUERY).cast()
        }

        /// Answers the route query in the buffer.
        #[unsafe(no_mangle)]
        pub extern "C" fn route_select() -> i32 {
            // SAFETY: the module is single-threaded; the host writes the buffer only
            // between calls, and this reference does not outlive the call.
            let buf = unsafe { &*core::ptr::addr_of!(IIPNIC_QUERY) };
            match $crate::RouteQuery::decode(buf) {
                Some(query) => $policy(&query).encode(),
                None => $crate::RouteDecision::NoRoute.encode(),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_layout() {
        let mut buf = [0u8; QUERY_BUFFER_LEN];
        buf[route_layout::FAMILY] = 4;
        buf[route_layout::PROTOCOL] = 17;
        buf[route_layout::CANDIDATE_COUNT] = 2;
        buf[route_layout::FLOW_HASH..][..4].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        buf[route_layout::SRC..][..4].copy_from_slice(&[10, 0, 0, 1]);
        let second = route_layout::CANDIDATES + route_layout::CANDIDATE_LEN;
        buf[second..second + 2].copy_from_slice(&7u16.to_le_bytes());
        buf[second + 2] = 1;
        buf[second + 4..second + 8].copy_from_slice(&20u32.to_le_bytes());
        let q = RouteQuery::decode(&buf).unwrap();
        assert_eq!((q.family, q.protocol, q.flow_hash), (4, 17, 0xdead_beef));
        assert_eq!(&q.src[..4], &[10, 0, 0, 1]);
        assert_eq!(q.candidates().len(), 2);
        assert_eq!(q.candidates()[1], Candidate { vif: 7, up: true, metric: 20, weight: 0 });
        assert!(RouteQuery::decode(&buf[..30]).is_none());
    }
}
