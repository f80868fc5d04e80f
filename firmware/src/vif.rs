//! Virtual interfaces: each one is an IPIP tunnel to one neighbour's underlay address.

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::control::ConfigError;
use crate::counters::TrafficCounters;

/// Identifies a virtual interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VifId(pub u16);

/// How the outer DSCP is chosen (RFC 2983).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DscpMode {
    /// Copy the inner DSCP to the outer header (the uniform model).
    #[default]
    Copy,
    /// Outer DSCP zero (the pipe model).
    Zero,
}

/// The outer IPv4 Don't Fragment bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DfMode {
    /// Always set (what Linux ipip does with path MTU discovery on).
    #[default]
    Set,
    /// Copy from an IPv4 inner header; set for IPv6 inner packets.
    Copy,
    /// Never set.
    Clear,
}

/// Ingress filtering of the inner source (RFC 3704), standing in for tunnel mode's
/// inner-selector check (RFC 3884 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UrpfMode {
    /// The route back to the source must point at the vif the packet came in on.
    #[default]
    Strict,
    /// Some route back to the source must exist.
    Loose,
    /// No check.
    Off,
}

fn default_mtu() -> u16 {
    1400
}

fn default_ttl() -> u8 {
    64
}

fn default_up() -> bool {
    true
}

/// A virtual interface as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VifConfig {
    /// Identity.
    pub id: VifId,
    /// Name for people ("to-b").
    #[serde(default)]
    pub name: String,
    /// This node's underlay address: the outer source.
    pub local: IpAddr,
    /// The neighbour's underlay address: the outer destination.
    pub remote: IpAddr,
    /// Largest inner packet carried; larger ones with DF get ICMP "too big" with this value.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Outer TTL / hop limit.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// Outer DSCP policy.
    #[serde(default)]
    pub dscp: DscpMode,
    /// Outer DF policy (IPv4 outer only).
    #[serde(default)]
    pub df: DfMode,
    /// Ingress filtering of inner sources arriving on this vif.
    #[serde(default)]
    pub urpf: UrpfMode,
    /// Administrative state.
    #[serde(default = "default_up")]
    pub up: bool,
}

impl VifConfig {
    /// Checks the fields; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(ConfigError::new(
                "remote",
                "local and remote must be the same family",
            ));
        }
        if self.mtu < 68 {
            return Err(ConfigError::new("mtu", "must be at least 68 (RFC 791)"));
        }
        if self.ttl == 0 {
            return Err(ConfigError::new("ttl", "must be at least 1"));
        }
        Ok(())
    }
}

/// The fields of a vif the send path reads, copied out (no `String`) so the vif table is
/// not borrowed while the SAD and counters are updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// The vif.
    pub id: VifId,
    /// Outer source.
    pub local: IpAddr,
    /// Outer destination.
    pub remote: IpAddr,
    /// Largest inner packet.
    pub mtu: u16,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Outer DSCP policy.
    pub dscp: DscpMode,
    /// Outer DF policy.
    pub df: DfMode,
    /// Link state.
    pub up: bool,
}

impl VifConfig {
    /// The send-path view of this vif.
    pub fn tunnel(&self) -> Tunnel {
        Tunnel {
            id: self.id,
            local: self.local,
            remote: self.remote,
            mtu: self.mtu,
            ttl: self.ttl,
            dscp: self.dscp,
            df: self.df,
            up: self.up,
        }
    }
}

/// A vif with its counters.
#[derive(Debug, Clone)]
pub struct Vif {
    /// Configuration.
    pub config: VifConfig,
    /// Traffic through it.
    pub counters: TrafficCounters,
}

/// All vifs, by id and by tunnel endpoints.
#[derive(Debug, Default)]
pub struct VifTable {
    vifs: BTreeMap<VifId, Vif>,
    by_endpoints: BTreeMap<(IpAddr, IpAddr), VifId>,
}

impl VifTable {
    /// Adds a vif or replaces the one with the same id (its counters survive).
    pub fn upsert(&mut self, config: VifConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let endpoints = (config.remote, config.local);
        if let Some(other) = self.by_endpoints.get(&endpoints)
            && *other != config.id
        {
            return Err(ConfigError::new(
                "remote",
                "another vif already joins these two underlay addresses",
            ));
        }
        let counters = match self.vifs.get(&config.id) {
            Some(old) => {
                self.by_endpoints
                    .remove(&(old.config.remote, old.config.local));
                old.counters
            }
            None => TrafficCounters::default(),
        };
        self.by_endpoints.insert(endpoints, config.id);
        self.vifs.insert(config.id, Vif { config, counters });
        Ok(())
    }

    /// Removes a vif; returns whether it existed.
    pub fn remove(&mut self, id: VifId) -> bool {
        match self.vifs.remove(&id) {
            Some(v) => {
                self.by_endpoints.remove(&(v.config.remote, v.config.local));
                true
            }
            None => false,
        }
    }

    /// Sets the link state.
    pub fn set_up(&mut self, id: VifId, up: bool) -> bool {
        match self.vifs.get_mut(&id) {
            Some(v) => {
                v.config.up = up;
                true
            }
            None => false,
        }
    }

    /// The vif with this id.
    pub fn get(&self, id: VifId) -> Option<&Vif> {
        self.vifs.get(&id)
    }

    /// The vif with this id, mutably.
    pub fn get_mut(&mut self, id: VifId) -> Option<&mut Vif> {
        self.vifs.get_mut(&id)
    }

    /// The vif a tunnel packet from `remote` to `local` arrives on.
    pub fn by_endpoints(&self, remote: IpAddr, local: IpAddr) -> Option<VifId> {
        self.by_endpoints.get(&(remote, local)).copied()
    }

    /// All vifs in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Vif> {
        self.vifs.values()
    }
}
