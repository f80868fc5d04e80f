//! A node: every table of one IIPtran endpoint, the policy engine, and the counters.
//! The packet walk itself lives in [`crate::pipeline`].

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use serde::Serialize;

use crate::control::{ConfigError, ControlOp, NodeConfig, NodeSettings};
use crate::counters::{Counters, DropReason, TrafficCounters};
use crate::fib::{Fib, RouteCache};
use crate::packet_buf::{HEADROOM, TAILROOM};
use crate::pipeline::Disposition;
use crate::policy::{PolicyEngine, SpdQuery};
use crate::reassembly::{Reassembler, ReassemblyLimits};
use crate::sad::{SaCounters, SaEvent, SaId, Sad};
use crate::spd::{Direction, Spd, SpdCache, SpdDecision};
use crate::vif::{VifId, VifTable};

/// Sizes fixed when a node is built; nothing on the packet path allocates afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeLimits {
    /// Slots in each SPD cache (SPD-O, SPD-I, SPD-S).
    pub spd_cache_slots: usize,
    /// Slots in the per-flow route-selection cache.
    pub route_cache_slots: usize,
    /// Outer reassembly.
    pub reassembly: ReassemblyLimits,
    /// Largest VN packet the node builds ICMP errors and fragments in.
    pub scratch_bytes: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            spd_cache_slots: 1024,
            route_cache_slots: 4096,
            reassembly: ReassemblyLimits::default(),
            scratch_bytes: HEADROOM + 9216 + TAILROOM,
        }
    }
}

/// The three SPD caches of RFC 4301 section 4.4.1.2, keyed on the tunnel header.
#[derive(Debug)]
pub(crate) struct SpdCaches {
    /// Outbound decisions.
    pub outbound: SpdCache,
    /// Inbound decisions for plaintext arrivals (BYPASS / DISCARD).
    pub inbound: SpdCache,
    /// Inbound decisions for traffic that arrived under ESP (PROTECT).
    pub secure: SpdCache,
}

/// One IIPtran endpoint.
#[derive(Debug)]
pub struct Node<P: PolicyEngine> {
    pub(crate) settings: NodeSettings,
    pub(crate) vifs: VifTable,
    pub(crate) fib: Fib,
    pub(crate) sad: Sad,
    pub(crate) spd: Spd,
    pub(crate) caches: SpdCaches,
    pub(crate) route_cache: RouteCache,
    pub(crate) policy: P,
    pub(crate) reassembly: Reassembler,
    pub(crate) counters: Counters,
    /// Room to build ICMP errors and inner fragments without allocating.
    pub(crate) scratch: Vec<u8>,
    /// Identification for outer IPv4 headers.
    pub(crate) next_ident: u16,
}

impl<P: PolicyEngine> Node<P> {
    /// Builds a node from a whole configuration. Errors name the path of the bad field,
    /// e.g. `sas[1].key`.
    pub fn new(
        config: &NodeConfig,
        policy: P,
        limits: NodeLimits,
        now_ms: u64,
    ) -> Result<Self, ConfigError> {
        if config.settings.underlay.is_empty() {
            return Err(ConfigError::new(
                "underlay",
                "a node needs at least one underlay address",
            ));
        }
        let mut node = Node {
            settings: config.settings.clone(),
            vifs: VifTable::default(),
            fib: Fib::default(),
            sad: Sad::default(),
            spd: Spd::default(),
            caches: SpdCaches {
                outbound: SpdCache::new(limits.spd_cache_slots),
                inbound: SpdCache::new(limits.spd_cache_slots),
                secure: SpdCache::new(limits.spd_cache_slots),
            },
            route_cache: RouteCache::new(limits.route_cache_slots),
            policy,
            reassembly: Reassembler::new(limits.reassembly),
            counters: Counters::default(),
            scratch: vec![0; limits.scratch_bytes],
            next_ident: 1,
        };
        for (i, vif) in config.vifs.iter().enumerate() {
            node.vifs
                .upsert(vif.clone())
                .map_err(|e| e.within(&format!("vifs[{i}]")))?;
        }
        for (i, route) in config.routes.iter().enumerate() {
            node.fib
                .upsert(route.clone())
                .map_err(|e| e.within(&format!("routes[{i}]")))?;
        }
        for (i, entry) in config.spd.iter().enumerate() {
            node.spd
                .upsert(*entry, None)
                .map_err(|e| e.within(&format!("spd[{i}]")))?;
        }
        for (i, sa) in config.sas.iter().enumerate() {
            if node.sad.get(sa.id).is_some() {
                return Err(ConfigError::new("id", "duplicate SA id").within(&format!("sas[{i}]")));
            }
            node.sad
                .install(sa.clone(), now_ms)
                .map_err(|e| e.within(&format!("sas[{i}]")))?;
        }
        Ok(node)
    }

    /// Applies one control operation between packets; the change is atomic with respect
    /// to the packet path, and every cached SPD decision is re-derived afterwards.
    pub fn apply(&mut self, op: ControlOp, now_ms: u64) -> Result<(), ConfigError> {
        match op {
            ControlOp::AddSa(sa) => {
                if self.sad.get(sa.id).is_some() {
                    return Err(ConfigError::new(
                        "id",
                        "an SA with this id exists; use replace_sa",
                    ));
                }
                self.sad.install(sa, now_ms)?;
            }
            ControlOp::ReplaceSa(sa) => {
                if self.sad.get(sa.id).is_none() {
                    return Err(ConfigError::new("id", "no SA with this id; use add_sa"));
                }
                self.sad.install(sa, now_ms)?;
            }
            ControlOp::RemoveSa { id } => {
                if !self.sad.remove(id) {
                    return Err(ConfigError::new("id", "no SA with this id"));
                }
            }
            ControlOp::UpsertSpdEntry { entry, position } => self.spd.upsert(entry, position)?,
            ControlOp::RemoveSpdEntry { id } => {
                if !self.spd.remove(id) {
                    return Err(ConfigError::new("id", "no SPD entry with this id"));
                }
            }
            ControlOp::UpsertVif(vif) => self.vifs.upsert(vif)?,
            ControlOp::RemoveVif { id } => {
                if !self.vifs.remove(id) {
                    return Err(ConfigError::new("id", "no vif with this id"));
                }
            }
            ControlOp::SetVifState { id, up } => {
                if !self.vifs.set_up(id, up) {
                    return Err(ConfigError::new("id", "no vif with this id"));
                }
            }
            ControlOp::UpsertRoute(route) => self.fib.upsert(route)?,
            ControlOp::RemoveRoute { prefix } => {
                if !self.fib.remove(prefix) {
                    return Err(ConfigError::new(
                        "prefix",
                        "no route for exactly this prefix",
                    ));
                }
            }
        }
        // Route and SA changes can change policy answers too (a module may look at link
        // state or SA ids), so every edit starts a new cache generation.
        self.spd.invalidate();
        Ok(())
    }

    /// Periodic work: SA time lifetimes and reassembly timeouts.
    pub fn poll(&mut self, now_ms: u64) {
        self.sad.poll(now_ms);
        let expired = self.reassembly.expire(now_ms);
        if let Some(c) = self
            .counters
            .drops
            .get_mut(DropReason::FragmentTimeout as usize)
        {
            *c += expired;
        }
    }

    /// Takes the oldest pending SA event (soft/hard lifetime, sequence exhausted).
    pub fn next_event(&mut self) -> Option<SaEvent> {
        self.sad.events.pop()
    }

    /// The policy engine (to swap modules or read its counters).
    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    /// Marks every cached policy decision stale. Engines report their own swaps through
    /// [`PolicyEngine::generation`]; this is for changes the node cannot see.
    pub fn invalidate_policy_caches(&mut self) {
        self.spd.invalidate();
    }

    /// The generation cached decisions must carry: it moves with every SPD or control
    /// change and with every change of the policy engine (both only ever grow).
    pub(crate) fn policy_generation(&self) -> u64 {
        self.spd.generation().wrapping_add(self.policy.generation())
    }

    /// Node-wide counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The SAD (read-only: keys stay inside).
    pub fn sad(&self) -> &Sad {
        &self.sad
    }

    /// The SAD, for tests and tools that position sequence numbers.
    pub fn sad_mut(&mut self) -> &mut Sad {
        &mut self.sad
    }

    /// The settings the node was built with.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// The virtual interfaces.
    pub fn vifs(&self) -> &VifTable {
        &self.vifs
    }

    /// The forwarding table.
    pub fn fib(&self) -> &Fib {
        &self.fib
    }

    /// The SPD.
    pub fn spd(&self) -> &Spd {
        &self.spd
    }

    /// A copy of every counter, for reports and JSON.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            global: self.counters.clone(),
            drops: self
                .counters
                .nonzero_drops()
                .map(|(r, n)| (r.name(), n))
                .collect(),
            vifs: self
                .vifs
                .iter()
                .map(|v| (v.config.id, v.counters))
                .collect(),
            sas: self
                .sad
                .iter()
                .map(|s| (s.config().id, s.counters))
                .collect(),
        }
    }

    /// Counts a drop and reports it.
    pub(crate) fn drop_packet(&mut self, reason: DropReason) -> Disposition {
        self.counters.drop(reason);
        Disposition::Dropped(reason)
    }

    /// Counts a drop against a vif too.
    pub(crate) fn drop_on_vif(&mut self, vif: VifId, reason: DropReason) -> Disposition {
        if let Some(v) = self.vifs.get_mut(vif) {
            v.counters.drops += 1;
        }
        self.drop_packet(reason)
    }

    /// Counts a drop against an SA too.
    pub(crate) fn drop_on_sa(&mut self, sa: SaId, reason: DropReason) -> Disposition {
        if let Some(s) = self.sad.get_mut(sa) {
            s.counters.traffic.drops += 1;
        }
        self.drop_packet(reason)
    }

    /// The SPD decision for a tunnel key: from the cache of that direction when it holds
    /// one of the current generation, otherwise from the policy engine.
    pub(crate) fn spd_decision(&mut self, query: SpdQuery) -> SpdDecision {
        let generation = self.policy_generation();
        let cache = match (query.direction, query.protected) {
            (Direction::Outbound, _) => &mut self.caches.outbound,
            (Direction::Inbound, false) => &mut self.caches.inbound,
            (Direction::Inbound, true) => &mut self.caches.secure,
        };
        if let Some(decision) = cache.get(&query.key, generation) {
            self.counters.spd_cache_hits += 1;
            return decision;
        }
        self.counters.spd_cache_misses += 1;
        let decision = self.policy.spd_decide(&self.spd, &query);
        // A module swap during the call is impossible (`&mut self`), so `generation` is
        // still current.
        if decision.cacheable {
            cache.insert(query.key, decision, generation);
        }
        decision
    }

    pub(crate) fn take_ident(&mut self) -> u16 {
        let ident = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        ident
    }
}

/// Every counter of a node at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct CounterSnapshot {
    /// Node-wide counters.
    pub global: Counters,
    /// Non-zero drop counters by name.
    pub drops: Vec<(&'static str, u64)>,
    /// Per-vif traffic.
    pub vifs: Vec<(VifId, TrafficCounters)>,
    /// Per-SA traffic, ICV failures and replays.
    pub sas: Vec<(SaId, SaCounters)>,
}
