//! What an emulation reports: per flow, per link, per node, the events and a time series.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use iipnic_firmware::node::CounterSnapshot;
use iipnic_firmware::policy::wasm::SlotCounters;
use serde::Serialize;

use super::topology::EventAction;

/// One traffic flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    /// Sending node.
    pub from: String,
    /// Inner source.
    pub src: IpAddr,
    /// Inner destination.
    pub dst: IpAddr,
    /// Packets generated.
    pub sent: u64,
    /// Packets delivered to the destination host (each sequence number once).
    pub delivered: u64,
    /// Deliveries of a sequence number already delivered (should stay 0: anti-replay).
    pub duplicates_delivered: u64,
    /// Packets not delivered, by reason (firmware drop reasons and link reasons).
    pub dropped: BTreeMap<String, u64>,
}

impl FlowReport {
    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// `sent - delivered - dropped`: zero when every packet is accounted for.
    pub fn unaccounted(&self) -> i64 {
        self.sent as i64 - self.delivered as i64 - self.dropped_total() as i64
    }
}

/// One underlay link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// Its nodes.
    pub between: [String; 2],
    /// Packets carried.
    pub packets: u64,
    /// Bytes carried.
    pub bytes: u64,
    /// Packets lost on it, by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Firmware counters.
    pub counters: CounterSnapshot,
    /// SPD module counters.
    pub spd_module: SlotCounters,
    /// Route module counters.
    pub route_module: SlotCounters,
}

/// A scheduled event and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// When.
    pub at_ms: u64,
    /// What.
    pub action: EventAction,
    /// The outcome, in words.
    pub result: Result<String, String>,
}

/// One point of the time series.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// End of the interval.
    pub at_ms: u64,
    /// Deliveries per second over the interval.
    pub delivered_pps: f64,
    /// Delivered inner bits per second, in Mbit/s.
    pub mbit_per_s: f64,
    /// Drops in the interval, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Policy module calls so far (all nodes).
    pub module_calls: u64,
}

/// Emulator speed.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Packets handed to nodes (host and underlay inputs).
    pub packets_processed: u64,
    /// Wall-clock milliseconds the run took.
    pub wall_ms: u64,
    /// Aggregate packets per second of wall-clock time.
    pub packets_per_second: f64,
}

/// The final report (`iipnic emulate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Traffic duration.
    pub duration_ms: u64,
    /// Seed of the run.
    pub seed: u64,
    /// Packets generated.
    pub sent: u64,
    /// Packets delivered.
    pub delivered: u64,
    /// Drops by reason, all flows.
    pub dropped: BTreeMap<String, u64>,
    /// Per flow.
    pub flows: Vec<FlowReport>,
    /// Per link.
    pub links: Vec<LinkReport>,
    /// Per node.
    pub nodes: BTreeMap<String, NodeReport>,
    /// Scheduled events.
    pub events: Vec<EventRecord>,
    /// Time series.
    pub samples: Vec<Sample>,
    /// Files written (pcaps, keys).
    pub files: Vec<PathBuf>,
    /// Emulator speed.
    pub emulator: Throughput,
}

impl Report {
    /// Assembles the report.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        duration_ms: u64,
        seed: u64,
        flows: Vec<FlowReport>,
        links: Vec<LinkReport>,
        nodes: BTreeMap<String, NodeReport>,
        events: Vec<EventRecord>,
        samples: Vec<Sample>,
        files: Vec<PathBuf>,
        processed: u64,
        wall: std::time::Duration,
    ) -> Self {
        let mut dropped = BTreeMap::new();
        for f in &flows {
            for (r, n) in &f.dropped {
                *dropped.entry(r.clone()).or_insert(0) += n;
            }
        }
        let wall_ms = wall.as_millis() as u64;
        Report {
            duration_ms,
            seed,
            sent: flows.iter().map(|f| f.sent).sum(),
            delivered: flows.iter().map(|f| f.delivered).sum(),
            dropped,
            flows,
            links,
            nodes,
            events,
            samples,
            files,
            emulator: Throughput {
                packets_processed: processed,
                wall_ms,
                packets_per_second: processed as f64 / wall.as_secs_f64().max(1e-9),
            },
        }
    }

    /// Drops between `from_ms` (inclusive) and `to_ms` (exclusive), from the samples.
    pub fn drops_between(&self, from_ms: u64, to_ms: u64) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.at_ms > from_ms && s.at_ms <= to_ms)
            .map(|s| s.drops.values().sum::<u64>())
            .sum()
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{} packets sent, {} delivered, {} dropped, {} unaccounted\n",
            self.sent,
            self.delivered,
            self.dropped.values().sum::<u64>(),
            self.flows.iter().map(|f| f.unaccounted()).sum::<i64>()
        ));
        for f in &self.flows {
            let drops: Vec<String> = f.dropped.iter().map(|(r, n)| format!("{r}={n}")).collect();
            out.push_str(&format!(
                "  flow {} {} -> {}: sent {}, delivered {}, dropped {} [{}]\n",
                f.from,
                f.src,
                f.dst,
                f.sent,
                f.delivered,
                f.dropped_total(),
                drops.join(", ")
            ));
        }
        for e in &self.events {
            match &e.result {
                Ok(text) => out.push_str(&format!("  t={:>5} ms  {text}\n", e.at_ms)),
                Err(text) => out.push_str(&format!("  t={:>5} ms  FAILED: {text}\n", e.at_ms)),
            }
        }
        out.push_str(&format!(
            "emulator: {} packets processed in {} ms wall clock ({:.0} packets/s)\n",
            self.emulator.packets_processed,
            self.emulator.wall_ms,
            self.emulator.packets_per_second
        ));
        out
    }
}
