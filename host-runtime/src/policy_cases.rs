//! `iipnic policy test MODULE --cases CASES.toml`: run decisions offline and compare them
//! with expected answers (the idea of eBPF's BPF_PROG_TEST_RUN).
//!
//! ```toml
//! slot = "spd"                      # or "route"
//! config_hex = "..."                # optional blob; or `spd = [...]` entries below
//!
//! [[spd]]                           # the node SPD handed to spd-rules-style modules
//! id = 1
//! direction = "outbound"
//! src = "192.0.2.1/32"
//! dst = "192.0.2.0/24"
//! action = "protect"
//! sa = 7
//!
//! [[case]]
//! name = "A to B is protected"
//! direction = "outbound"            # spd cases
//! src = "192.0.2.1"
//! dst = "192.0.2.2"
//! protocol = 4
//! expect = { action = "protect", sa = 7 }
//!
//! [[case]]                          # route cases
//! name = "first healthy"
//! src = "10.1.0.1"
//! dst = "10.2.0.1"
//! flow_hash = 12345
//! candidates = [{ vif = 1, up = false }, { vif = 2 }]
//! expect = { choice = 1 }           # or { choice = "none" }
//! ```

use std::net::IpAddr;
use std::path::Path;

use iipnic_firmware::fib::NextHop;
use iipnic_firmware::policy::wasm::{ConfigSource, SlotKind, SlotSettings, WasmPolicy};
use iipnic_firmware::policy::{Candidate, PolicyEngine, RouteQuery, SpdQuery};
use iipnic_firmware::sad::SaId;
use iipnic_firmware::spd::{Action, Direction, Spd, SpdEntry, TunnelKey};
use iipnic_firmware::vif::VifId;
use serde::Deserialize;

use crate::policy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    slot: SlotKind,
    #[serde(default)]
    config_hex: Option<String>,
    #[serde(default)]
    spd: Vec<SpdEntry>,
    #[serde(default)]
    settings: SlotSettings,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

fn default_up() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseCandidate {
    vif: u16,
    #[serde(default = "default_up")]
    up: bool,
    #[serde(default)]
    metric: u32,
    #[serde(default = "weight")]
    weight: u32,
}

fn weight() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    direction: Option<Direction>,
    src: IpAddr,
    dst: IpAddr,
    #[serde(default)]
    protocol: u8,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    flow_hash: u32,
    #[serde(default)]
    now_ms: u64,
    #[serde(default)]
    candidates: Vec<CaseCandidate>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    sa: Option<u32>,
    #[serde(default)]
    choice: Option<toml::Value>,
}

/// Outcome of a run.
#[derive(Debug)]
pub struct CaseReport {
    /// One line per case.
    pub lines: Vec<String>,
    /// Cases that matched.
    pub passed: usize,
    /// Cases that did not.
    pub failed: usize,
}

/// Runs the cases of `cases_path` against the module at `module_path`.
pub fn run(module_path: &Path, cases_path: &Path) -> Result<CaseReport, String> {
    let text = crate::config::read_file(cases_path).map_err(|e| e.to_string())?;
    let file: CasesFile =
        crate::config::parse_toml(cases_path, &text).map_err(|e| e.to_string())?;
    let engine = policy::host_engine()?;
    let module = policy::compile(&engine, module_path)?;
    let mut spd = Spd::default();
    for (i, entry) in file.spd.iter().enumerate() {
        spd.upsert(*entry, None)
            .map_err(|e| format!("{}: spd[{i}].{e}", cases_path.display()))?;
    }
    let config = match &file.config_hex {
        Some(hex) => {
            ConfigSource::Blob(hex::decode(hex.trim()).map_err(|e| format!("config_hex: {e}"))?)
        }
        None if !file.spd.is_empty() => ConfigSource::NodeSpd,
        None => ConfigSource::Blob(Vec::new()),
    };
    let mut engine = WasmPolicy::new(engine).map_err(|e| e.to_string())?;
    engine
        .load(file.slot, module, config, file.settings, &spd, 0)
        .map_err(|e| format!("{}: {e}", module_path.display()))?;
    let mut report = CaseReport {
        lines: Vec::new(),
        passed: 0,
        failed: 0,
    };
    for case in &file.cases {
        let (got, ok) = match file.slot {
            SlotKind::Spd => spd_case(&mut engine, &spd, case)?,
            SlotKind::Route => route_case(&mut engine, case)?,
        };
        if ok {
            report.passed += 1;
            report.lines.push(format!("PASS  {}: {got}", case.name));
        } else {
            report.failed += 1;
            report.lines.push(format!(
                "FAIL  {}: got {got}, expected {:?}",
                case.name, case.expect
            ));
        }
    }
    let c = engine.counters(file.slot);
    report.lines.push(format!(
        "{} passed, {} failed; {} calls, {} fuel, {} traps, {} bad outputs",
        report.passed,
        report.failed,
        c.calls,
        c.fuel_used,
        c.traps(),
        c.bad_outputs
    ));
    Ok(report)
}

fn spd_case(engine: &mut WasmPolicy, spd: &Spd, case: &Case) -> Result<(String, bool), String> {
    let query = SpdQuery {
        direction: case
            .direction
            .ok_or_else(|| format!("case `{}`: spd cases need a direction", case.name))?,
        key: TunnelKey {
            src: case.src,
            dst: case.dst,
            protocol: case.protocol,
        },
        protected: case.protected,
        now_ms: case.now_ms,
    };
    let d = engine.spd_decide(spd, &query);
    let (action, sa) = match d.action {
        Action::Discard => ("discard", None),
        Action::Bypass => ("bypass", None),
        Action::Protect { sa } => ("protect", sa.map(|SaId(id)| id)),
    };
    let ok = case.expect.action.as_deref().is_none_or(|a| a == action)
        && (case.expect.sa.is_none() || case.expect.sa == sa);
    Ok((
        format!(
            "{action}{}",
            sa.map(|s| format!(" sa {s}")).unwrap_or_default()
        ),
        ok,
    ))
}

fn route_case(engine: &mut WasmPolicy, case: &Case) -> Result<(String, bool), String> {
    let candidates: Vec<Candidate> = case
        .candidates
        .iter()
        .map(|c| Candidate {
            next_hop: NextHop {
                vif: VifId(c.vif),
                metric: c.metric,
                weight: c.weight,
            },
            up: c.up,
        })
        .collect();
    let query = RouteQuery {
        src: case.src,
        dst: case.dst,
        protocol: case.protocol,
        flow_hash: case.flow_hash,
        candidates: &candidates,
        now_ms: case.now_ms,
    };
    let d = engine.route_select(&query);
    let expected = match &case.expect.choice {
        Some(toml::Value::Integer(i)) => Some(usize::try_from(*i).ok()),
        Some(toml::Value::String(s)) if s == "none" => Some(None),
        Some(other) => {
            return Err(format!(
                "case `{}`: choice must be an index or \"none\", not {other}",
                case.name
            ));
        }
        None => None,
    };
    let got = d
        .choice
        .map_or("none".to_string(), |i| format!("candidate {i}"));
    Ok((got, expected.is_none_or(|e| e == d.choice)))
}
