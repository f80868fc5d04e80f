//! The workstation emulator: whole IIPtran networks in one process.
//!
//! Every node is the firmware library (`Node<WasmPolicy>`) exactly as a board runs it; only
//! the ports differ. The emulator is a discrete-event simulation on a virtual clock: links
//! add delay, loss, reordering and duplication; traffic sources emit tagged VN packets;
//! scheduled events cut links, swap policy modules and rekey SAs. One thread drives every
//! node, so a run is deterministic for a given topology and seed, however fast the host is.
//!
//! Accounting: every generated packet ends up delivered, or dropped under a named reason
//! (a firmware [`DropReason`](iipnic_firmware::DropReason) or a link reason), per flow.

pub mod chart;
pub mod control;
pub mod report;
pub mod tap;
pub mod topology;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::PathBuf;

use iipnic_firmware::control::{ControlOp, HexKey};
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::policy::wasm::{ConfigSource, SlotKind, SlotSettings, WasmPolicy};
use iipnic_firmware::sad::{SaDirection, SaId};
use iipnic_firmware::wire::{ipv4, ipv6, proto};
use iipnic_firmware::{Disposition, Node, PacketBuf, Port};
use wasmtime::{Engine, Module};

use crate::pcap;
use crate::policy;
use report::{EventRecord, FlowReport, LinkReport, Report, Sample};
use topology::{EventAction, FlowSpec, LinkSpec, Rng, Topology};

/// Marks the payload of every packet a traffic source makes: "IIPN", flow, sequence.
const MARKER: &[u8; 4] = b"IIPN";

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Virtual time to run, in milliseconds (traffic stops then; in-flight packets drain).
    pub duration_ms: u64,
    /// Seed of loss, reordering, duplication and generated keys.
    pub seed: u64,
    /// Write one pcap per link and a Wireshark `esp_sa` file here.
    pub pcap_dir: Option<PathBuf>,
    /// Interval of the throughput samples (chart, report).
    pub sample_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration_ms: 5_000,
            seed: 1,
            pcap_dir: None,
            sample_ms: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    flow: usize,
    seq: u64,
    /// A copy made by a duplicating link: its fate is not the flow's.
    duplicate: bool,
}

enum Kind {
    Emit(usize),
    Arrive {
        node: usize,
        packet: Vec<u8>,
        tag: Option<Tag>,
    },
    Scheduled(EventAction),
    Detect {
        link: usize,
        up: bool,
    },
    RemoveSa {
        node: usize,
        sa: SaId,
    },
    Sample,
}

struct Event {
    at_ns: u64,
    order: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.order) == (other.at_ns, other.order)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ns, self.order).cmp(&(other.at_ns, other.order))
    }
}

struct LinkState {
    spec: LinkSpec,
    ends: [usize; 2],
    up: bool,
    packets: u64,
    bytes: u64,
    dropped: BTreeMap<&'static str, u64>,
    pcap: Option<pcap::Writer<BufWriter<File>>>,
}

struct FlowState {
    spec: FlowSpec,
    from: usize,
    sent: u64,
    delivered: u64,
    delivered_bytes: u64,
    duplicates: u64,
    seen: Vec<u64>,
    dropped: BTreeMap<String, u64>,
}

/// One SA as Wireshark needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    /// Outer source.
    pub src: IpAddr,
    /// Outer destination.
    pub dst: IpAddr,
    /// SPI.
    pub spi: u32,
    /// AES key and salt, hex.
    pub key_hex: String,
    /// ICV length.
    pub icv_len: usize,
}

/// A running emulation.
pub struct Emulator {
    names: Vec<String>,
    nodes: Vec<Node<WasmPolicy>>,
    engine: Engine,
    modules: HashMap<String, Module>,
    links: Vec<LinkState>,
    owner: HashMap<IpAddr, usize>,
    flows: Vec<FlowState>,
    queue: BinaryHeap<Reverse<Event>>,
    order: u64,
    now_ns: u64,
    rng: Rng,
    options: Options,
    keys: Vec<KeyLine>,
    rekeys: u32,
    events: Vec<EventRecord>,
    samples: Vec<Sample>,
    last_sample: (u64, u64, BTreeMap<String, u64>),
    buffer: Vec<u8>,
    processed: u64,
    stop_requested: bool,
    /// Traffic has stopped; only packets in flight still move.
    draining: bool,
    /// Host sides attached to TUN interfaces (TAP mode), by node index.
    taps: Vec<(usize, tap::Tun)>,
    /// Packets to or from TUN interfaces: received, sent, dropped (kernel queue full).
    pub tap_counters: [u64; 3],
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("nodes", &self.names)
            .field("now_ns", &self.now_ns)
            .finish_non_exhaustive()
    }
}

fn ms(ms: u64) -> u64 {
    ms * 1_000_000
}

impl Emulator {
    /// Builds every node (with its policy modules), link and flow of `topology`.
    pub fn new(topology: Topology, options: Options) -> Result<Self, String> {
        let engine = policy::host_engine()?;
        let names: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
        let mut nodes = Vec::new();
        let mut keys = Vec::new();
        let mut owner = HashMap::new();
        let mut modules: HashMap<String, Module> = HashMap::new();
        for (i, n) in topology.nodes.iter().enumerate() {
            let policy = WasmPolicy::new(engine.clone()).map_err(|e| e.to_string())?;
            let mut node = Node::new(&n.config, policy, Default::default(), 0)
                .map_err(|e| format!("nodes[{i}] ({}): {e}", n.name))?;
            for addr in &n.config.settings.underlay {
                if owner.insert(*addr, i).is_some() {
                    return Err(format!("nodes[{i}].underlay: {addr} belongs to two nodes"));
                }
            }
            for sa in n
                .config
                .sas
                .iter()
                .filter(|s| s.direction == SaDirection::Outbound)
            {
                keys.push(key_line(
                    sa.src,
                    sa.dst,
                    sa.spi,
                    &sa.key,
                    sa.icv_len.bytes(),
                ));
            }
            let spd = node.spd().clone();
            for (slot, name, config) in [
                (SlotKind::Spd, &n.modules.spd, None),
                (
                    SlotKind::Route,
                    &n.modules.route,
                    n.modules.route_config_hex.as_deref(),
                ),
            ] {
                let Some(name) = name else { continue };
                let module = load_module(&engine, &mut modules, name)?;
                let config = match (slot, config) {
                    (_, Some(hex)) => ConfigSource::Blob(
                        hex::decode(hex)
                            .map_err(|e| format!("{}: route_config_hex: {e}", n.name))?,
                    ),
                    (SlotKind::Spd, None) => ConfigSource::NodeSpd,
                    (SlotKind::Route, None) => ConfigSource::Blob(Vec::new()),
                };
                node.policy_mut()
                    .load(slot, module, config, SlotSettings::default(), &spd, 0)
                    .map_err(|e| format!("{}: {name}: {e}", n.name))?;
            }
            nodes.push(node);
        }
        let index = |name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| format!("no node named `{name}`"))
        };
        let mut links = Vec::new();
        for spec in &topology.links {
            let ends = [index(&spec.between[0])?, index(&spec.between[1])?];
            let pcap = match &options.pcap_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    let path =
                        dir.join(format!("link-{}-{}.pcap", spec.between[0], spec.between[1]));
                    let file =
                        File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    Some(pcap::Writer::new(BufWriter::new(file)).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            links.push(LinkState {
                spec: spec.clone(),
                ends,
                up: true,
                packets: 0,
                bytes: 0,
                dropped: BTreeMap::new(),
                pcap,
            });
        }
        let mut flows = Vec::new();
        for spec in &topology.flows {
            flows.push(FlowState {
                from: index(&spec.from)?,
                spec: spec.clone(),
                sent: 0,
                delivered: 0,
                delivered_bytes: 0,
                duplicates: 0,
                seen: Vec::new(),
                dropped: BTreeMap::new(),
            });
        }
        let mut emulator = Emulator {
            names,
            nodes,
            engine,
            modules,
            links,
            owner,
            flows,
            queue: BinaryHeap::new(),
            order: 0,
            now_ns: 0,
            rng: Rng::new(options.seed),
            keys,
            rekeys: 0,
            events: Vec::new(),
            samples: Vec::new(),
            last_sample: (0, 0, BTreeMap::new()),
            buffer: vec![0u8; HEADROOM + 65_535 + TAILROOM],
            processed: 0,
            stop_requested: false,
            draining: false,
            taps: Vec::new(),
            tap_counters: [0; 3],
            options,
        };
        for i in 0..emulator.flows.len() {
            let start = emulator.flows[i].spec.start_ms;
            emulator.schedule(ms(start), Kind::Emit(i));
        }
        for e in topology.events {
            emulator.schedule(ms(e.at_ms), Kind::Scheduled(e.action));
        }
        emulator.schedule(ms(emulator.options.sample_ms), Kind::Sample);
        Ok(emulator)
    }

    fn schedule(&mut self, at_ns: u64, kind: Kind) {
        self.order += 1;
        self.queue.push(Reverse(Event {
            at_ns,
            order: self.order,
            kind,
        }));
    }

    /// One line for a terminal: time, rates and drops so far.
    pub fn status_line(&self) -> String {
        let last = self.samples.last();
        let drops: u64 = self
            .flows
            .iter()
            .map(|f| f.dropped.values().sum::<u64>())
            .sum();
        let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
        for f in &self.flows {
            for (r, n) in &f.dropped {
                *reasons.entry(r).or_insert(0) += n;
            }
        }
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
        format!(
            "t={:>6.1}s  delivered {:>8.0} pkt/s {:>7.1} Mbit/s  drops {drops} [{}]  module calls {}   ",
            self.now_ms() as f64 / 1000.0,
            last.map_or(0.0, |s| s.delivered_pps),
            last.map_or(0.0, |s| s.mbit_per_s),
            reasons.join(" "),
            last.map_or(0, |s| s.module_calls)
        )
    }

    /// Attaches `node`'s host side to the TUN interface `interface` (TAP mode).
    pub fn attach_tap(&mut self, node: &str, interface: &str) -> Result<(), String> {
        let index = self
            .names
            .iter()
            .position(|n| n == node)
            .ok_or_else(|| format!("no node named `{node}`"))?;
        let tun = tap::Tun::open(interface)?;
        self.taps.push((index, tun));
        Ok(())
    }

    /// Feeds every packet waiting on the TUN interfaces into their nodes' host sides.
    fn poll_taps(&mut self) {
        let mut packet = vec![0u8; 65_535];
        for t in 0..self.taps.len() {
            while let Some(len) = self.taps[t].1.read(&mut packet) {
                self.tap_counters[0] += 1;
                let node = self.taps[t].0;
                let bytes = packet[..len].to_vec();
                self.input(node, true, &bytes, None);
            }
        }
    }

    /// When the next scheduled event is due.
    fn next_event_ns(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse(e)| e.at_ns)
    }

    /// Virtual time now, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ns / 1_000_000
    }

    /// Runs until `until_ms` of virtual time (flows stop at the run's duration; after it,
    /// only in-flight packets are drained). `progress` is called after every sample.
    pub fn run_until(&mut self, until_ms: u64, progress: &mut dyn FnMut(&Emulator)) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at_ns > ms(until_ms) {
                break;
            }
            let Some(Reverse(event)) = self.queue.pop() else {
                break;
            };
            self.now_ns = event.at_ns;
            let sampled = matches!(event.kind, Kind::Sample);
            self.handle(event.kind);
            if sampled {
                progress(self);
            }
        }
        self.now_ns = self.now_ns.max(ms(until_ms));
    }

    /// Runs the whole scenario: `duration_ms` of traffic, then the drain.
    pub fn run(&mut self, progress: &mut dyn FnMut(&Emulator)) {
        let duration = self.options.duration_ms;
        self.run_until(duration, progress);
        // Let in-flight packets land (links are milliseconds long), but generate nothing.
        self.run_until(duration + 1_000, progress);
    }

    fn handle(&mut self, kind: Kind) {
        match kind {
            Kind::Emit(flow) => self.emit(flow),
            Kind::Arrive { node, packet, tag } => self.input(node, false, &packet, tag),
            Kind::Scheduled(action) => {
                let result = self.apply(&action);
                self.events.push(EventRecord {
                    at_ms: self.now_ms(),
                    action,
                    result,
                });
            }
            Kind::Detect { link, up } => self.detect(link, up),
            Kind::RemoveSa { node, sa } => {
                let now = self.now_ms();
                let _ = self.nodes[node].apply(ControlOp::RemoveSa { id: sa }, now);
            }
            Kind::Sample => {
                self.sample();
                if self.options.duration_ms == 0 || self.now_ns < ms(self.options.duration_ms) {
                    self.schedule(self.now_ns + ms(self.options.sample_ms), Kind::Sample);
                }
            }
        }
    }

    fn emit(&mut self, index: usize) {
        // Duration 0 (live runs): traffic until the emulation is stopped.
        let run_end = match self.options.duration_ms {
            0 => u64::MAX / 2_000_000,
            d => d,
        };
        let stop = self.flows[index]
            .spec
            .stop_ms
            .unwrap_or(run_end)
            .min(run_end);
        if self.draining {
            return;
        }
        if self.now_ns >= ms(stop) {
            return;
        }
        let flow = &mut self.flows[index];
        let seq = flow.sent;
        flow.sent += 1;
        let packet = flow_packet(&flow.spec, index, seq);
        let from = flow.from;
        let interval = 1_000_000_000 / flow.spec.rate_pps;
        self.schedule(self.now_ns + interval, Kind::Emit(index));
        self.input(
            from,
            true,
            &packet,
            Some(Tag {
                flow: index,
                seq,
                duplicate: false,
            }),
        );
    }

    /// Hands a packet to a node and routes whatever it emits.
    fn input(&mut self, node: usize, from_host: bool, packet: &[u8], tag: Option<Tag>) {
        self.processed += 1;
        let now = self.now_ms();
        let Some(mut pkt) = PacketBuf::copy_from(&mut self.buffer, packet) else {
            return;
        };
        let mut out: Vec<(Port, Vec<u8>)> = Vec::new();
        let mut tx = |port: Port, p: &[u8]| out.push((port, p.to_vec()));
        let disposition = if from_host {
            self.nodes[node].from_host(&mut pkt, now, &mut tx)
        } else {
            self.nodes[node].from_underlay(&mut pkt, now, &mut tx)
        };
        if let (Disposition::Dropped(reason), Some(tag)) = (disposition, tag) {
            self.count_drop(tag, reason.name());
        }
        for (port, bytes) in out {
            match port {
                Port::Underlay => self.transmit(node, bytes, tag),
                Port::Host => self.deliver(node, &bytes),
                Port::Punt => {}
            }
        }
    }

    /// Charges a drop to the packet's flow, unless another copy of the same packet (made
    /// by a duplicating link) was or will be the one that counts.
    fn count_drop(&mut self, tag: Tag, reason: &str) {
        let flow = &mut self.flows[tag.flow];
        let (word, bit) = ((tag.seq / 64) as usize, tag.seq % 64);
        let delivered = flow.seen.get(word).is_some_and(|w| w & (1 << bit) != 0);
        if !tag.duplicate && !delivered {
            *flow.dropped.entry(reason.to_string()).or_insert(0) += 1;
        }
    }

    /// Puts a tunnel packet on the link towards its outer destination.
    fn transmit(&mut self, from: usize, bytes: Vec<u8>, tag: Option<Tag>) {
        let dst = crate::replay::addresses(&bytes).map(|(_, d)| d);
        let to = dst.and_then(|d| self.owner.get(&d).copied());
        let link = to.and_then(|to| {
            self.links
                .iter()
                .position(|l| l.ends == [from, to] || l.ends == [to, from])
        });
        let (Some(to), Some(li)) = (to, link) else {
            if let Some(tag) = tag {
                self.count_drop(tag, "no_link");
            }
            return;
        };
        let link = &mut self.links[li];
        let verdict = if !link.up {
            Some("link_down")
        } else if bytes.len() > usize::from(link.spec.mtu) {
            Some("link_mtu")
        } else {
            None
        };
        if let Some(reason) = verdict {
            *link.dropped.entry(reason).or_insert(0) += 1;
            if let Some(tag) = tag {
                self.count_drop(tag, reason);
            }
            return;
        }
        link.packets += 1;
        link.bytes += bytes.len() as u64;
        if let Some(w) = link.pcap.as_mut() {
            let _ = w.write(self.now_ns / 1000, &bytes);
        }
        // Copy the four numbers out instead of cloning the spec (its names allocate).
        let (loss, reorder, duplicate, delay_ms) = (
            link.spec.loss,
            link.spec.reorder,
            link.spec.duplicate,
            link.spec.delay_ms,
        );
        if self.rng.unit() < loss {
            *self.links[li].dropped.entry("link_loss").or_insert(0) += 1;
            if let Some(tag) = tag {
                self.count_drop(tag, "link_loss");
            }
            return;
        }
        let delay = (delay_ms * 1e6) as u64;
        let extra = if self.rng.unit() < reorder {
            (self.rng.unit() * delay_ms * 1e6) as u64
        } else {
            0
        };
        if self.rng.unit() < duplicate {
            let copy = tag.map(|t| Tag {
                duplicate: true,
                ..t
            });
            let at = self.now_ns + delay + (self.rng.unit() * 1e5) as u64;
            self.schedule(
                at,
                Kind::Arrive {
                    node: to,
                    packet: bytes.clone(),
                    tag: copy,
                },
            );
        }
        self.schedule(
            self.now_ns + delay + extra,
            Kind::Arrive {
                node: to,
                packet: bytes,
                tag,
            },
        );
    }

    /// A VN packet reached a host: to the node's TUN interface in TAP mode, and counted
    /// for its flow if it carries a marker.
    fn deliver(&mut self, node: usize, packet: &[u8]) {
        if let Some((_, tun)) = self.taps.iter_mut().find(|(n, _)| *n == node) {
            let i = if tun.write(packet) { 1 } else { 2 };
            self.tap_counters[i] += 1;
        }
        let Some((flow, seq, len)) = parse_marker(packet) else {
            return;
        };
        let Some(state) = self.flows.get_mut(flow) else {
            return;
        };
        // A duplicate copy that overtook its original and won: the original's later fate
        // (a replay drop) is then not charged, see `count_drop`. If the original had
        // already been charged a drop, this delivery cancels nothing: copies only exist
        // for packets the link did not lose, so that cannot happen.
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if state.seen.len() <= word {
            state.seen.resize(word + 1, 0);
        }
        if state.seen[word] & (1 << bit) != 0 {
            state.duplicates += 1;
            return;
        }
        state.seen[word] |= 1 << bit;
        state.delivered += 1;
        state.delivered_bytes += len as u64;
    }

    /// Applies a scheduled or control action; the result is a sentence for the report.
    pub fn apply(&mut self, action: &EventAction) -> Result<String, String> {
        let index = |names: &[String], name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| format!("no node named `{name}`"))
        };
        match action {
            EventAction::LinkDown { link } | EventAction::LinkUp { link } => {
                let up = matches!(action, EventAction::LinkUp { .. });
                let (a, b) = (index(&self.names, &link[0])?, index(&self.names, &link[1])?);
                let li = self
                    .links
                    .iter()
                    .position(|l| l.ends == [a, b] || l.ends == [b, a])
                    .ok_or_else(|| format!("no link between {} and {}", link[0], link[1]))?;
                self.links[li].up = up;
                let detect = self.links[li].spec.detect_ms;
                self.schedule(self.now_ns + ms(detect), Kind::Detect { link: li, up });
                Ok(format!(
                    "link {}-{} {}; nodes notice in {detect} ms",
                    link[0],
                    link[1],
                    if up { "up" } else { "down" }
                ))
            }
            EventAction::SwapModule { node, slot, module } => {
                let n = index(&self.names, node)?;
                let m = load_module(&self.engine, &mut self.modules, module)?;
                let spd = self.nodes[n].spd().clone();
                let config = match slot {
                    SlotKind::Spd => ConfigSource::NodeSpd,
                    SlotKind::Route => ConfigSource::Blob(Vec::new()),
                };
                let prepared = WasmPolicy::prepare(
                    &self.engine,
                    *slot,
                    m,
                    config,
                    SlotSettings::default(),
                    &spd,
                    self.now_ms(),
                )
                .map_err(|e| format!("{module}: {e}"))?;
                drop(self.nodes[n].policy_mut().install(prepared));
                Ok(format!("{node}: {module} swapped into the {slot:?} slot"))
            }
            EventAction::Rekey { from, to } => {
                self.rekey(index(&self.names, from)?, index(&self.names, to)?)
            }
        }
    }

    /// Make-before-break: the receiver adds an inbound SA with a new SPI and key, the sender
    /// replaces its outbound SA (same id) with it, and the receiver removes the old inbound
    /// SA once packets in flight under the old one have landed.
    fn rekey(&mut self, from: usize, to: usize) -> Result<String, String> {
        let now = self.now_ms();
        let out = self.nodes[from]
            .sad()
            .iter()
            .find(|sa| {
                let c = sa.config();
                c.direction == SaDirection::Outbound && self.owner.get(&c.dst) == Some(&to)
            })
            .map(|sa| sa.config().clone())
            .ok_or_else(|| {
                format!(
                    "{} has no outbound SA to {}",
                    self.names[from], self.names[to]
                )
            })?;
        let old_in = self.nodes[to]
            .sad()
            .iter()
            .find(|sa| {
                sa.config().direction == SaDirection::Inbound
                    && sa.config().spi == out.spi
                    && sa.config().dst == out.dst
            })
            .map(|sa| sa.config().clone())
            .ok_or_else(|| {
                format!(
                    "{} has no inbound SA for SPI {:#x}",
                    self.names[to], out.spi
                )
            })?;
        self.rekeys += 1;
        let key_len = out.key.as_bytes().len();
        let key = HexKey::from_hex(&hex::encode(self.rng.bytes(key_len)))
            .ok_or("key generation failed")?;
        let spi = out.spi.wrapping_add(0x1_0000 * self.rekeys);
        let mut new_in = old_in.clone();
        new_in.id = SaId(old_in.id.0 + 1000 * self.rekeys);
        new_in.spi = spi;
        new_in.key = key.clone();
        self.nodes[to]
            .apply(ControlOp::AddSa(new_in.clone()), now)
            .map_err(|e| e.to_string())?;
        let mut new_out = out.clone();
        new_out.spi = spi;
        new_out.key = key;
        self.nodes[from]
            .apply(ControlOp::ReplaceSa(new_out.clone()), now)
            .map_err(|e| e.to_string())?;
        self.keys.push(key_line(
            new_out.src,
            new_out.dst,
            spi,
            &new_out.key,
            new_out.icv_len.bytes(),
        ));
        let grace = self
            .links
            .iter()
            .map(|l| l.spec.delay_ms)
            .fold(0.0, f64::max)
            * 4.0
            + 10.0;
        self.schedule(
            self.now_ns + (grace * 1e6) as u64,
            Kind::RemoveSa {
                node: to,
                sa: old_in.id,
            },
        );
        Ok(format!(
            "{}->{}: SPI {:#x} -> {spi:#x}; old inbound SA removed after {grace:.0} ms",
            self.names[from], self.names[to], out.spi
        ))
    }

    /// The nodes see a link change: vifs over it go down or up (route caches follow).
    fn detect(&mut self, link: usize, up: bool) {
        let ends = self.links[link].ends;
        let now = self.now_ms();
        for (me, peer) in [(ends[0], ends[1]), (ends[1], ends[0])] {
            let peer_addrs: Vec<IpAddr> = self
                .owner
                .iter()
                .filter(|&(_, &n)| n == peer)
                .map(|(a, _)| *a)
                .collect();
            let vifs: Vec<_> = self.nodes[me]
                .vifs()
                .iter()
                .filter(|v| peer_addrs.contains(&v.config.remote))
                .map(|v| v.config.id)
                .collect();
            for id in vifs {
                let _ = self.nodes[me].apply(ControlOp::SetVifState { id, up }, now);
            }
        }
    }

    fn sample(&mut self) {
        let delivered: u64 = self.flows.iter().map(|f| f.delivered).sum();
        let bytes: u64 = self.flows.iter().map(|f| f.delivered_bytes).sum();
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for f in &self.flows {
            for (r, n) in &f.dropped {
                *drops.entry(r.clone()).or_insert(0) += n;
            }
        }
        let (last_delivered, last_bytes, last_drops) = &self.last_sample;
        let interval_s = self.options.sample_ms as f64 / 1000.0;
        let new_drops: BTreeMap<String, u64> = drops
            .iter()
            .map(|(r, n)| (r.clone(), n - last_drops.get(r).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        self.samples.push(Sample {
            at_ms: self.now_ms(),
            delivered_pps: (delivered - last_delivered) as f64 / interval_s,
            mbit_per_s: (bytes - last_bytes) as f64 * 8.0 / interval_s / 1e6,
            drops: new_drops,
            module_calls: self
                .nodes
                .iter_mut()
                .map(|n| {
                    let p = n.policy_mut();
                    p.counters(SlotKind::Spd).calls + p.counters(SlotKind::Route).calls
                })
                .sum(),
        });
        self.last_sample = (delivered, bytes, drops);
    }

    /// The Wireshark `esp_sa` lines for every SA used so far (rekeyed ones included).
    pub fn wireshark_keys(&self) -> String {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "\"{}\",\"{}\",\"{}\",\"{:#010x}\",\"AES-GCM with {} octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
                    if k.src.is_ipv4() { "IPv4" } else { "IPv6" },
                    k.src,
                    k.dst,
                    k.spi,
                    k.icv_len,
                    k.key_hex
                )
            })
            .collect()
    }

    /// Finishes pcaps and the keys file and returns the report.
    pub fn finish(mut self, wall: std::time::Duration) -> Result<Report, String> {
        let mut files = Vec::new();
        for link in &mut self.links {
            if let Some(w) = link.pcap.take() {
                w.finish().map_err(|e| e.to_string())?;
            }
        }
        if let Some(dir) = &self.options.pcap_dir {
            let path = dir.join("esp_sa");
            std::fs::write(&path, self.wireshark_keys())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for l in &self.links {
                files.push(dir.join(format!(
                    "link-{}-{}.pcap",
                    l.spec.between[0], l.spec.between[1]
                )));
            }
            files.push(path);
        }
        let flows: Vec<FlowReport> = self
            .flows
            .iter()
            .map(|f| FlowReport {
                from: f.spec.from.clone(),
                src: f.spec.src,
                dst: f.spec.dst,
                sent: f.sent,
                delivered: f.delivered,
                duplicates_delivered: f.duplicates,
                dropped: f.dropped.clone(),
            })
            .collect();
        let links = self
            .links
            .iter()
            .map(|l| LinkReport {
                between: l.spec.between.clone(),
                packets: l.packets,
                bytes: l.bytes,
                dropped: l.dropped.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            })
            .collect();
        let mut nodes = BTreeMap::new();
        for (name, node) in self.names.iter().zip(self.nodes.iter_mut()) {
            let snapshot = node.snapshot();
            let policy = node.policy_mut();
            nodes.insert(
                name.clone(),
                report::NodeReport {
                    counters: snapshot,
                    spd_module: policy.counters(SlotKind::Spd),
                    route_module: policy.counters(SlotKind::Route),
                },
            );
        }
        Ok(Report::new(
            self.options.duration_ms,
            self.options.seed,
            flows,
            links,
            nodes,
            self.events,
            self.samples,
            files,
            self.processed,
            wall,
        ))
    }
}

fn load_module(
    engine: &Engine,
    cache: &mut HashMap<String, Module>,
    name: &str,
) -> Result<Module, String> {
    if let Some(m) = cache.get(name) {
        return Ok(m.clone());
    }
    let path = policy::find_module(name)?;
    let module = policy::compile(engine, &path)?;
    cache.insert(name.to_string(), module.clone());
    Ok(module)
}

fn key_line(src: IpAddr, dst: IpAddr, spi: u32, key: &HexKey, icv_len: usize) -> KeyLine {
    KeyLine {
        src,
        dst,
        spi,
        key_hex: key.to_hex(),
        icv_len,
    }
}

/// A UDP packet of the flow, with the marker, flow index and sequence in its payload.
fn flow_packet(spec: &FlowSpec, flow: usize, seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; spec.size];
    let header = match (spec.src, spec.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let repr = ipv4::Repr {
                src,
                dst,
                protocol: proto::UDP,
                payload_len: spec.size - 20,
                ttl: 64,
                tos: 0,
                ident: seq as u16,
                dont_frag: true,
            };
            let _ = repr.emit(&mut p);
            20
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let repr = ipv6::Repr {
                src,
                dst,
                next_header: proto::UDP,
                payload_len: spec.size - 40,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            let _ = repr.emit(&mut p);
            40
        }
        // Topology::load refuses mixed families.
        _ => return p,
    };
    let udp_len = (spec.size - header) as u16;
    p[header..header + 2].copy_from_slice(&(10_000 + flow as u16).to_be_bytes());
    p[header + 2..header + 4].copy_from_slice(&9u16.to_be_bytes());
    p[header + 4..header + 6].copy_from_slice(&udp_len.to_be_bytes());
    let payload = header + 8;
    p[payload..payload + 4].copy_from_slice(MARKER);
    p[payload + 4..payload + 8].copy_from_slice(&(flow as u32).to_be_bytes());
    p[payload + 8..payload + 16].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Flow index, sequence number and length of a delivered flow packet.
fn parse_marker(packet: &[u8]) -> Option<(usize, u64, usize)> {
    let header = match packet.first()? >> 4 {
        4 => usize::from(packet.first()? & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    let at = header + 8;
    if packet.get(at..at + 4)? != MARKER {
        return None;
    }
    let flow = u32::from_be_bytes(packet.get(at + 4..at + 8)?.try_into().ok()?) as usize;
    let seq = u64::from_be_bytes(packet.get(at + 8..at + 16)?.try_into().ok()?);
    Some((flow, seq, packet.len()))
}
