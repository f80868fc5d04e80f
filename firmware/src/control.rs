//! The control model: serde types that add, change and remove SAs, SPD entries, vifs and
//! routes while traffic flows, and their validation errors. No I/O: the host runtime or a
//! board's management channel decodes messages and calls [`crate::node::Node::apply`].
//!
//! Rekey is make-before-break: install the new inbound SA (new SPI) while the old one still
//! accepts, then `ReplaceSa` the outbound SA under the same id (the next packet uses the
//! new keys), then remove the old inbound SA once the peer has switched.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fib::Route;
use crate::prefix::IpPrefix;
use crate::sad::{SaConfig, SaId};
use crate::spd::{SpdEntry, SpdEntryId};
use crate::vif::{VifConfig, VifId};

/// A configuration value was refused. `field` names it relative to the object being
/// installed ("key", "lifetime.soft_bytes"); the caller adds the path to that object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The field at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &str, message: &str) -> Self {
        ConfigError {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    /// The same error, with `prefix` put in front of the field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            alloc::format!("{prefix}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Key material, written as hex in configuration. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HexKey(Vec<u8>);

impl HexKey {
    /// Parses hex digits (an optional `0x` prefix and `:` separators are allowed).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.strip_prefix("0x").unwrap_or(text);
        let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        digits
            .chunks_exact(2)
            .map(|pair| match pair {
                &[hi, lo] => Some(nibble(hi)? << 4 | nibble(lo)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .map(HexKey)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as lowercase hex (for key export to Wireshark, never for logs).
    pub fn to_hex(&self) -> String {
        use core::fmt::Write;
        let mut s = String::with_capacity(self.0.len() * 2);
        for b in &self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for HexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexKey(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for HexKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for HexKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HexKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("key material as hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HexKey, E> {
                HexKey::from_hex(v)
                    .ok_or_else(|| E::custom("key must be an even number of hex digits"))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Node-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// This node's underlay addresses: tunnel packets to any other address are not ours.
    pub underlay: Vec<IpAddr>,
    /// Largest packet the underlay port sends.
    #[serde(default = "default_underlay_mtu")]
    pub underlay_mtu: u16,
    /// Source of ICMPv4 errors the node generates about inner packets.
    #[serde(default)]
    pub icmp_source_v4: Option<Ipv4Addr>,
    /// Source of ICMPv6 errors the node generates about inner packets.
    #[serde(default)]
    pub icmp_source_v6: Option<Ipv6Addr>,
}

fn default_underlay_mtu() -> u16 {
    1500
}

/// A whole node's configuration, as a board stores it or a topology file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeConfig {
    /// Node-wide settings.
    #[serde(flatten)]
    pub settings: NodeSettings,
    /// Virtual interfaces.
    #[serde(default)]
    pub vifs: Vec<VifConfig>,
    /// VN routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Ordered SPD entries.
    #[serde(default)]
    pub spd: Vec<SpdEntry>,
    /// SAs.
    #[serde(default)]
    pub sas: Vec<SaConfig>,
}

/// One change to a running node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum ControlOp {
    /// Install a new SA; fails if the id exists.
    AddSa(SaConfig),
    /// Replace the SA with this id atomically (outbound rekey).
    ReplaceSa(SaConfig),
    /// Remove an SA.
    RemoveSa {
        /// Which.
        id: SaId,
    },
    /// Insert or replace an SPD entry (at `position` when given, else at the end).
    UpsertSpdEntry {
        /// The entry.
        entry: SpdEntry,
        /// Index in the ordered list.
        #[serde(default)]
        position: Option<usize>,
    },
    /// Remove an SPD entry.
    RemoveSpdEntry {
        /// Which.
        id: SpdEntryId,
    },
    /// Add or replace a vif.
    UpsertVif(VifConfig),
    /// Remove a vif.
    RemoveVif {
        /// Which.
        id: VifId,
    },
    /// Set a vif's link state.
    SetVifState {
        /// Which.
        id: VifId,
        /// Up or down.
        up: bool,
    },
    /// Add or replace a route.
    UpsertRoute(Route),
    /// Remove the route for exactly this prefix.
    RemoveRoute {
        /// Which.
        prefix: IpPrefix,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys() {
        let k = HexKey::from_hex("0x00:01:fe").unwrap();
        assert_eq!(k.as_bytes(), &[0, 1, 0xfe]);
        assert_eq!(k.to_hex(), "0001fe");
        assert!(HexKey::from_hex("abc").is_none());
        assert!(HexKey::from_hex("zz").is_none());
        assert!(!alloc::format!("{k:?}").contains("fe"));
    }

    #[test]
    fn errors_carry_a_path() {
        let e = ConfigError::new("key", "bad").within("sas[2]");
        assert_eq!(alloc::format!("{e}"), "sas[2].key: bad");
    }
}
