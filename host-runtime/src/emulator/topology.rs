//! Topology files: nodes (the firmware's node configuration plus policy modules), underlay
//! links with delay, loss, reordering and duplication, traffic flows, and scheduled events.
//! [`Topology::default_triangle`] builds the built-in three-node network.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use iipnic_firmware::control::{HexKey, NodeConfig, NodeSettings};
use iipnic_firmware::esp::{Algorithm, IcvLen};
use iipnic_firmware::fib::{NextHop, Route, RouteTarget};
use iipnic_firmware::policy::wasm::SlotKind;
use iipnic_firmware::prefix::IpPrefix;
use iipnic_firmware::sad::{Lifetime, SaConfig, SaDirection, SaId};
use iipnic_firmware::spd::{Action, Direction, Selector, SpdEntry, SpdEntryId};
use iipnic_firmware::vif::{VifConfig, VifId};
use serde::Deserialize;

use crate::config::{self, ConfigFileError};

/// Policy modules of a node.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// SPD module (name or path); the node SPD is its configuration when it is `spd_rules`.
    #[serde(default)]
    pub spd: Option<String>,
    /// Route-selection module (name or path).
    #[serde(default)]
    pub route: Option<String>,
    /// Configuration blob for the route module, as hex.
    #[serde(default)]
    pub route_config_hex: Option<String>,
}

/// A node in a topology.
#[derive(Debug, Clone, Deserialize)]
pub struct TopoNode {
    /// Name used by links, flows, events and `iipnic ctl`.
    pub name: String,
    /// Modules per slot (none: native engine).
    #[serde(default)]
    pub modules: Modules,
    /// The firmware configuration.
    #[serde(flatten)]
    pub config: NodeConfig,
}

fn default_delay() -> f64 {
    1.0
}

fn default_mtu() -> u16 {
    1500
}

fn default_detect() -> u64 {
    50
}

/// An underlay link between two nodes' underlay ports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The two nodes.
    pub between: [String; 2],
    /// One-way delay in milliseconds.
    #[serde(default = "default_delay")]
    pub delay_ms: f64,
    /// Probability that a packet is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability that a packet is held back (by up to one delay) and so reordered.
    #[serde(default)]
    pub reorder: f64,
    /// Probability that a packet is duplicated.
    #[serde(default)]
    pub duplicate: f64,
    /// Largest packet the link carries.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Milliseconds until the nodes notice the link is down or up (BFD-like detection).
    #[serde(default = "default_detect")]
    pub detect_ms: u64,
}

fn default_rate() -> u64 {
    1000
}

fn default_size() -> usize {
    512
}

/// A stream of VN packets from one host to another.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Node whose host side sends.
    pub from: String,
    /// Inner source address (behind `from`).
    pub src: IpAddr,
    /// Inner destination address.
    pub dst: IpAddr,
    /// Packets per second.
    #[serde(default = "default_rate")]
    pub rate_pps: u64,
    /// Inner packet size in bytes.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Start, in milliseconds.
    #[serde(default)]
    pub start_ms: u64,
    /// Stop, in milliseconds (default: the run's duration).
    #[serde(default)]
    pub stop_ms: Option<u64>,
}

/// Something that happens at a given time. (`deny_unknown_fields` does not combine with
/// `flatten`; the action's own fields are checked by its tag.)
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// When, in milliseconds.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub action: EventAction,
}

/// The actions a scenario can schedule (and `iipnic ctl` can trigger).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum EventAction {
    /// Cut a link.
    LinkDown {
        /// Its two nodes.
        link: [String; 2],
    },
    /// Restore a link.
    LinkUp {
        /// Its two nodes.
        link: [String; 2],
    },
    /// Hot-swap a policy module on a node.
    SwapModule {
        /// The node.
        node: String,
        /// Which slot.
        slot: SlotKind,
        /// Module name or path.
        module: String,
    },
    /// Rekey the SA pair carrying `from` -> `to`, make-before-break.
    Rekey {
        /// Sending node.
        from: String,
        /// Receiving node.
        to: String,
    },
}

/// A whole topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The nodes.
    pub nodes: Vec<TopoNode>,
    /// Underlay links.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// Traffic.
    #[serde(default)]
    pub flows: Vec<FlowSpec>,
    /// Scheduled events.
    #[serde(default)]
    pub events: Vec<ScheduledEvent>,
}

/// Tiny deterministic generator (xorshift64*): loss, reordering and test keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

impl Topology {
    /// Reads a topology file; errors name the file, the line and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = config::read_file(path)?;
        let topology: Topology = config::parse_toml(path, &text)?;
        topology.check(path)?;
        Ok(topology)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigFileError> {
        let error = |field: String, message: String| ConfigFileError {
            file: PathBuf::from(path),
            line: None,
            field,
            message,
        };
        let known = |name: &str| self.nodes.iter().any(|n| n.name == name);
        for (i, link) in self.links.iter().enumerate() {
            for name in &link.between {
                if !known(name) {
                    return Err(error(
                        format!("links[{i}].between"),
                        format!("no node named `{name}`"),
                    ));
                }
            }
            for (field, p) in [
                ("loss", link.loss),
                ("reorder", link.reorder),
                ("duplicate", link.duplicate),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    return Err(error(
                        format!("links[{i}].{field}"),
                        "must be a probability between 0 and 1".into(),
                    ));
                }
            }
        }
        for (i, flow) in self.flows.iter().enumerate() {
            if !known(&flow.from) {
                return Err(error(
                    format!("flows[{i}].from"),
                    format!("no node named `{}`", flow.from),
                ));
            }
            if flow.src.is_ipv4() != flow.dst.is_ipv4() {
                return Err(error(
                    format!("flows[{i}].dst"),
                    "src and dst must be the same family".into(),
                ));
            }
            // IP + UDP headers and the 16-byte marker that identifies the packet.
            let min = if flow.src.is_ipv4() { 44 } else { 64 };
            if flow.size < min || flow.size > 9000 {
                return Err(error(
                    format!("flows[{i}].size"),
                    format!("must be between {min} and 9000 bytes"),
                ));
            }
            if flow.rate_pps == 0 || flow.rate_pps > 1_000_000 {
                return Err(error(
                    format!("flows[{i}].rate_pps"),
                    "must be between 1 and 1000000".into(),
                ));
            }
        }
        Ok(())
    }

    /// The built-in network: three nodes in a triangle, so every pair has a direct path and
    /// an alternate one through the third node. Each node serves 10.N.0.0/16 and
    /// fd00:N::/48; every tunnel is protected by AES-128-GCM with keys drawn from `rng`.
    /// Flows: A <-> C and B -> C over IPv4, A -> C over IPv6.
    pub fn default_triangle(rng: &mut Rng) -> Topology {
        let names = ["A", "B", "C"];
        let underlay = |i: usize| IpAddr::from([192, 0, 2, i as u8 + 1]);
        let mut keys = [
            [Vec::new(), Vec::new(), Vec::new()],
            [Vec::new(), Vec::new(), Vec::new()],
            [Vec::new(), Vec::new(), Vec::new()],
        ];
        for (i, row) in keys.iter_mut().enumerate() {
            for (j, k) in row.iter_mut().enumerate() {
                if i != j {
                    *k = rng.bytes(20);
                }
            }
        }
        let nodes = (0..3)
            .map(|i| {
                let me = i + 1;
                let mut config = NodeConfig {
                    settings: NodeSettings {
                        underlay: vec![underlay(i)],
                        underlay_mtu: 1500,
                        icmp_source_v4: format!("10.{me}.255.254").parse().ok(),
                        icmp_source_v6: format!("fd00:{me}::fffe").parse().ok(),
                    },
                    ..NodeConfig::default()
                };
                let host = |p: String| Route {
                    prefix: p.parse().expect("valid prefix"),
                    target: RouteTarget::Host,
                };
                config.routes.push(host(format!("10.{me}.0.0/16")));
                config.routes.push(host(format!("fd00:{me}::/48")));
                for j in (0..3).filter(|&j| j != i) {
                    let peer = j + 1;
                    let third = 3 - i - j;
                    let vif = |n: usize| VifId(n as u16 + 1);
                    config.vifs.push(VifConfig {
                        id: vif(j),
                        name: format!("to-{}", names[j]),
                        local: underlay(i),
                        remote: underlay(j),
                        mtu: 1400,
                        ttl: 64,
                        dscp: Default::default(),
                        df: Default::default(),
                        urpf: Default::default(),
                        up: true,
                    });
                    let next_hops = vec![
                        NextHop {
                            vif: vif(j),
                            metric: 10,
                            weight: 1,
                        },
                        NextHop {
                            vif: vif(third),
                            metric: 20,
                            weight: 1,
                        },
                    ];
                    for prefix in [format!("10.{peer}.0.0/16"), format!("fd00:{peer}::/48")] {
                        let prefix = prefix.parse().expect("valid prefix");
                        config.routes.push(Route {
                            prefix,
                            target: RouteTarget::Vif {
                                next_hops: next_hops.clone(),
                            },
                        });
                    }
                    let (out_id, in_id) = (sa_id(me, peer), sa_id(peer, me));
                    config.spd.push(SpdEntry {
                        id: SpdEntryId(out_id),
                        direction: Direction::Outbound,
                        selector: Selector {
                            src: IpPrefix::host(underlay(i)),
                            dst: IpPrefix::host(underlay(j)),
                            protocol: None,
                        },
                        action: Action::Protect {
                            sa: Some(SaId(out_id)),
                        },
                    });
                    config.spd.push(SpdEntry {
                        id: SpdEntryId(in_id),
                        direction: Direction::Inbound,
                        selector: Selector {
                            src: IpPrefix::host(underlay(j)),
                            dst: IpPrefix::host(underlay(i)),
                            protocol: None,
                        },
                        action: Action::Protect { sa: None },
                    });
                    config.sas.push(sa(
                        out_id,
                        SaDirection::Outbound,
                        me,
                        peer,
                        &keys[i][j],
                        underlay(i),
                        underlay(j),
                    ));
                    config.sas.push(sa(
                        in_id,
                        SaDirection::Inbound,
                        peer,
                        me,
                        &keys[j][i],
                        underlay(j),
                        underlay(i),
                    ));
                }
                TopoNode {
                    name: names[i].to_string(),
                    modules: Modules::default(),
                    config,
                }
            })
            .collect();
        let link = |a: &str, b: &str| LinkSpec {
            between: [a.to_string(), b.to_string()],
            delay_ms: 2.0,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            mtu: 1500,
            detect_ms: 50,
        };
        let flow = |from: &str, src: &str, dst: &str| FlowSpec {
            from: from.to_string(),
            src: src.parse().expect("valid address"),
            dst: dst.parse().expect("valid address"),
            rate_pps: 1000,
            size: 512,
            start_ms: 0,
            stop_ms: None,
        };
        Topology {
            nodes,
            links: vec![link("A", "B"), link("B", "C"), link("A", "C")],
            flows: vec![
                flow("A", "10.1.0.10", "10.3.0.10"),
                flow("C", "10.3.0.10", "10.1.0.10"),
                flow("B", "10.2.0.10", "10.3.0.20"),
                flow("A", "fd00:1::10", "fd00:3::10"),
            ],
            events: Vec::new(),
        }
    }
}

/// SA id of the direction `from` -> `to` (node numbers 1..=9).
pub fn sa_id(from: usize, to: usize) -> u32 {
    (from * 10 + to) as u32
}

/// SPI of the direction `from` -> `to` in the default topology (above the reserved 0-255).
pub fn spi(from: usize, to: usize, generation: u32) -> u32 {
    0x1000 + (generation << 8) + (from as u32) * 16 + to as u32
}

fn sa(
    id: u32,
    direction: SaDirection,
    from: usize,
    to: usize,
    key: &[u8],
    src: IpAddr,
    dst: IpAddr,
) -> SaConfig {
    SaConfig {
        id: SaId(id),
        direction,
        spi: spi(from, to, 0),
        algorithm: Algorithm::AesGcm,
        key: HexKey::from_hex(&hex::encode(key)).expect("hex::encode yields valid hex"),
        icv_len: IcvLen::Sixteen,
        esn: false, // tshark 4.0 cannot check ESN ICVs; ESN is tested in the firmware suite
        replay_window: 1024,
        src,
        dst,
        protocol: None,
        lifetime: Lifetime::default(),
    }
}
