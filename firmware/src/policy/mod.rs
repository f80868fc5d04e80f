//! The policy plane seen from the fast path: two questions, asked only on a cache miss.
//!
//! * **SPD decision**: what to do with a tunnel packet (PROTECT with which SA, BYPASS,
//!   DISCARD), given its tunnel-header selectors.
//! * **Route selection**: which of a route's candidate next hops (vifs) carries a VN packet.
//!
//! [`NativePolicy`] answers them with RFC 4301 first-match semantics and "best metric that
//! is up", for tests and for boards without WebAssembly modules. The sandboxed WebAssembly
//! engine implements the same trait.

mod native;

pub use native::NativePolicy;

use core::net::IpAddr;

use crate::fib::NextHop;
use crate::spd::{Direction, Spd, SpdDecision, TunnelKey};

/// An SPD question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpdQuery {
    /// Outbound or inbound.
    pub direction: Direction,
    /// The tunnel-header selectors.
    pub key: TunnelKey,
    /// Inbound only: the packet arrived under ESP (true) or in clear (false).
    pub protected: bool,
    /// Node time, for policies that look at the clock.
    pub now_ms: u64,
}

/// A candidate next hop as route selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The configured next hop.
    pub next_hop: NextHop,
    /// Link state of its vif.
    pub up: bool,
}

/// A route-selection question.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// Inner source.
    pub src: IpAddr,
    /// Inner destination.
    pub dst: IpAddr,
    /// Inner protocol.
    pub protocol: u8,
    /// A hash of the inner flow (addresses, protocol, ports when present): keeps a flow
    /// on one path under ECMP.
    pub flow_hash: u32,
    /// Candidates, best metric first.
    pub candidates: &'a [Candidate],
    /// Node time, for policies that look at the clock.
    pub now_ms: u64,
}

/// The answer to a route-selection question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    /// Index of the chosen candidate; `None` when no candidate is usable.
    pub choice: Option<usize>,
    /// May the node reuse this answer for the same flow until the policy changes?
    pub cacheable: bool,
}

/// What the fast path needs from a policy engine.
pub trait PolicyEngine {
    /// Changes whenever the engine's answers may change (a module was swapped): the node
    /// drops every cached decision of an older generation.
    fn generation(&self) -> u64 {
        0
    }

    /// Decides an SPD question. `spd` holds the control plane's ordered entries.
    fn spd_decide(&mut self, spd: &Spd, query: &SpdQuery) -> SpdDecision;

    /// Picks one of the candidates.
    fn route_select(&mut self, query: &RouteQuery<'_>) -> RouteDecision;
}

impl<P: PolicyEngine + ?Sized> PolicyEngine for &mut P {
    fn generation(&self) -> u64 {
        (**self).generation()
    }

    fn spd_decide(&mut self, spd: &Spd, query: &SpdQuery) -> SpdDecision {
        (**self).spd_decide(spd, query)
    }

    fn route_select(&mut self, query: &RouteQuery<'_>) -> RouteDecision {
        (**self).route_select(query)
    }
}

#[cfg(feature = "wasm-policy")]
pub mod wasm;
#[cfg(feature = "wasm-policy")]
pub mod wasm_config;
