//! The sandboxed policy engine: WebAssembly modules (ABI v1, `docs/policy-abi.md`) behind
//! the [`PolicyEngine`] trait, on the wasmtime runtime (no_std, Pulley or native code).
//!
//! Each of the two slots (SPD, route selection) holds at most one live module and one
//! shadow. A module is only called on a cache miss. Every call runs with a fuel budget
//! (and an epoch deadline where the target has 64-bit atomics) inside a store whose memory
//! is capped, so a hostile module can burn only its own budget. A trap, a timeout or a
//! malformed answer gives the slot's failure decision (fail-closed by default), drops the
//! instance and re-instantiates it after an exponential backoff. An empty slot behaves
//! exactly like [`NativePolicy`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use iipnic_policy_sdk::abi::{self, names};
use serde::Serialize;
use wasmtime::{
    Caller, Engine, ExternType, Instance, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, ValType,
};

use super::{NativePolicy, PolicyEngine, RouteDecision, RouteQuery, SpdQuery};
use crate::sad::SaId;
use crate::spd::{Action, Direction, Spd, SpdDecision, SpdEntryId};

/// Which question a slot answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    /// SPD decisions (`spd_decide`).
    Spd,
    /// Route selection (`route_select`).
    Route,
}

impl SlotKind {
    fn export(self) -> &'static str {
        match self {
            SlotKind::Spd => names::SPD_DECIDE,
            SlotKind::Route => names::ROUTE_SELECT,
        }
    }
}

/// What a slot answers while its module cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// SPD: DISCARD; route: no route. The default: a broken policy must not open the gate.
    #[default]
    Closed,
    /// SPD: BYPASS; route: the native choice (best metric that is up). Only where the
    /// operator says availability beats protection.
    Open,
}

/// Limits and failure policy of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlotSettings {
    /// Fuel (roughly, wasm instructions) per decision.
    pub fuel_per_call: u64,
    /// Fuel for `iipnic_init` and `iipnic_self_test`.
    pub fuel_for_init: u64,
    /// Largest linear memory, in bytes.
    pub memory_limit: usize,
    /// Epoch ticks a call may span (targets with epochs; the embedder ticks the engine).
    pub epoch_ticks: u64,
    /// Decision while the module is failing.
    pub fail: FailMode,
    /// First wait before re-instantiating a module that trapped.
    pub backoff_initial_ms: u64,
    /// Longest wait.
    pub backoff_max_ms: u64,
}

impl Default for SlotSettings {
    fn default() -> Self {
        SlotSettings {
            fuel_per_call: 100_000,
            fuel_for_init: 10_000_000,
            memory_limit: 256 * 1024,
            epoch_ticks: 2,
            fail: FailMode::Closed,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
        }
    }
}

/// Where a module's configuration blob comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// These bytes, given once at load.
    Blob(Vec<u8>),
    /// The node's SPD, encoded as [`abi::SpdRule`]s and handed over again whenever it
    /// changes (the `spd-rules` module).
    NodeSpd,
}

/// Why a module was refused. Every message names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes are not a module this engine can run.
    Invalid(String),
    /// A required export is missing.
    MissingExport(&'static str),
    /// An export has the wrong type.
    WrongExportType(&'static str),
    /// The module imports something outside the ABI.
    ForbiddenImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// The module speaks an ABI version this host does not serve.
    UnsupportedAbi {
        /// Major version the module reported.
        major: u16,
        /// Minor version the module reported.
        minor: u16,
    },
    /// Instantiation failed (memory larger than the slot allows, say).
    Instantiate(String),
    /// The query buffer is not inside linear memory.
    BadQueryBuffer,
    /// The configuration blob is larger than the module accepts.
    ConfigTooLarge(usize),
    /// `iipnic_init` refused the configuration with this code.
    InitFailed(i32),
    /// `iipnic_self_test` failed with this code.
    SelfTestFailed(i32),
    /// The module trapped while loading.
    Trapped(TrapKind),
    /// Nothing is loaded in that slot (for shadow promotion).
    NoShadow,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Invalid(e) => write!(f, "not a valid module: {e}"),
            LoadError::MissingExport(name) => write!(f, "missing export `{name}`"),
            LoadError::WrongExportType(name) => write!(f, "export `{name}` has the wrong type"),
            LoadError::ForbiddenImport { module, name } => write!(
                f,
                "imports `{module}.{name}`; only `iipnic.log` and `iipnic.now_ms` are allowed"
            ),
            LoadError::UnsupportedAbi { major, minor } => write!(
                f,
                "ABI version {major}.{minor} is not served (this host serves {}.0 to {}.{})",
                abi::ABI_MAJOR,
                abi::ABI_MAJOR,
                abi::ABI_MINOR
            ),
            LoadError::Instantiate(e) => write!(f, "instantiation failed: {e}"),
            LoadError::BadQueryBuffer => f.write_str("query buffer lies outside linear memory"),
            LoadError::ConfigTooLarge(len) => {
                write!(f, "the module refused a {len}-byte configuration")
            }
            LoadError::InitFailed(code) => write!(f, "iipnic_init failed with code {code}"),
            LoadError::SelfTestFailed(code) => write!(f, "self-test failed with code {code}"),
            LoadError::Trapped(kind) => write!(f, "trapped while loading: {}", kind.name()),
            LoadError::NoShadow => f.write_str("no shadow module is loaded in that slot"),
        }
    }
}

/// Traps, grouped the way operators care about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrapKind {
    /// The fuel budget ran out (an endless or too-long computation).
    OutOfFuel,
    /// The epoch deadline passed.
    Timeout,
    /// Memory access out of bounds.
    MemoryOutOfBounds,
    /// `unreachable` (a Rust panic in the module).
    Unreachable,
    /// Stack exhausted.
    StackOverflow,
    /// Any other trap or host error.
    Other,
}

impl TrapKind {
    fn of(error: &wasmtime::Error) -> TrapKind {
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => TrapKind::OutOfFuel,
            Some(Trap::Interrupt) => TrapKind::Timeout,
            Some(Trap::MemoryOutOfBounds) => TrapKind::MemoryOutOfBounds,
            Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
            Some(Trap::StackOverflow) => TrapKind::StackOverflow,
            _ => TrapKind::Other,
        }
    }

    /// The counter name.
    pub fn name(self) -> &'static str {
        match self {
            TrapKind::OutOfFuel => "out_of_fuel",
            TrapKind::Timeout => "timeout",
            TrapKind::MemoryOutOfBounds => "memory_out_of_bounds",
            TrapKind::Unreachable => "unreachable",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::Other => "other",
        }
    }
}

/// Counters of one slot.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct SlotCounters {
    /// Decisions asked of the module.
    pub calls: u64,
    /// Fuel those calls used.
    pub fuel_used: u64,
    /// Traps: out of fuel.
    pub trap_out_of_fuel: u64,
    /// Traps: epoch deadline.
    pub trap_timeout: u64,
    /// Traps: out-of-bounds memory access.
    pub trap_memory_out_of_bounds: u64,
    /// Traps: unreachable / panic.
    pub trap_unreachable: u64,
    /// Traps: stack overflow.
    pub trap_stack_overflow: u64,
    /// Traps: anything else.
    pub trap_other: u64,
    /// Answers that were not a valid decision (bad status, bad encoding, bad index).
    pub bad_outputs: u64,
    /// Decisions taken by the failure policy instead of the module.
    pub failure_decisions: u64,
    /// Successful re-instantiations after a failure.
    pub reloads: u64,
    /// Failed re-instantiations.
    pub reload_failures: u64,
    /// Configuration hand-overs after a node SPD change.
    pub reconfigurations: u64,
    /// Modules swapped in.
    pub swaps: u64,
    /// Calls made to the shadow module.
    pub shadow_calls: u64,
    /// Shadow answers that differed from the live module's.
    pub shadow_mismatches: u64,
    /// Log lines dropped because the log ring was full.
    pub log_lines_dropped: u64,
}

impl SlotCounters {
    fn count_trap(&mut self, kind: TrapKind) {
        let counter = match kind {
            TrapKind::OutOfFuel => &mut self.trap_out_of_fuel,
            TrapKind::Timeout => &mut self.trap_timeout,
            TrapKind::MemoryOutOfBounds => &mut self.trap_memory_out_of_bounds,
            TrapKind::Unreachable => &mut self.trap_unreachable,
            TrapKind::StackOverflow => &mut self.trap_stack_overflow,
            TrapKind::Other => &mut self.trap_other,
        };
        *counter += 1;
    }

    /// All traps.
    pub fn traps(&self) -> u64 {
        self.trap_out_of_fuel
            + self.trap_timeout
            + self.trap_memory_out_of_bounds
            + self.trap_unreachable
            + self.trap_stack_overflow
            + self.trap_other
    }
}

/// A decision of either kind, for shadow reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AnyDecision {
    /// An SPD decision.
    Spd(SpdDecision),
    /// A route decision: index, or none.
    Route(Option<usize>),
}

/// One place where a shadow module disagreed with the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShadowMismatch {
    /// Source of the query (outer for SPD, inner for routes).
    pub src: IpAddr,
    /// Destination of the query.
    pub dst: IpAddr,
    /// The live module's answer.
    pub live: AnyDecision,
    /// The shadow's answer (`None`: it failed).
    pub shadow: Option<AnyDecision>,
}

/// Mismatches kept for inspection.
pub const SHADOW_REPORT_LEN: usize = 16;

/// One log line from a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Which slot.
    pub slot: SlotKind,
    /// Level as the module gave it.
    pub level: i32,
    /// The text (cut at 120 bytes, lossily decoded).
    pub text: String,
}

/// Lines a store keeps until the embedder drains them.
const LOG_CAPACITY: usize = 32;
const LOG_LINE_MAX: usize = 120;

/// The data of one store: limits, clock and the module's log lines.
struct Guest {
    limits: StoreLimits,
    now_ms: u64,
    log: Vec<(i32, [u8; LOG_LINE_MAX], usize)>,
    log_dropped: u64,
}

/// A live instance.
struct Live {
    store: Store<Guest>,
    memory: Memory,
    query_at: usize,
    decide: TypedFunc<(), i32>,
    config_buffer: Option<TypedFunc<i32, i32>>,
    init: Option<TypedFunc<i32, i32>>,
    self_test: Option<TypedFunc<(), i32>>,
    /// Node SPD generation last handed over (`ConfigSource::NodeSpd`).
    spd_generation: Option<u64>,
}

/// A module in a slot, its instance (if healthy) and its backoff state.
struct Loaded {
    module: Module,
    config: ConfigSource,
    settings: SlotSettings,
    instance: Option<Live>,
    failures: u32,
    retry_at_ms: u64,
}

enum CallFailure {
    Trapped,
    BadOutput,
    Unavailable,
}

#[derive(Default)]
struct Slot {
    live: Option<Loaded>,
    shadow: Option<Loaded>,
    counters: SlotCounters,
    mismatches: Vec<ShadowMismatch>,
}

/// The WebAssembly policy engine.
pub struct WasmPolicy {
    engine: Engine,
    linker: Linker<Guest>,
    spd: Slot,
    route: Slot,
    generation: u64,
    logs: Vec<LogLine>,
    /// Scratch for encoding the node's SPD.
    spd_blob: Vec<u8>,
}

impl fmt::Debug for WasmPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmPolicy")
            .field("spd_loaded", &self.spd.live.is_some())
            .field("route_loaded", &self.route.live.is_some())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Checks a module's imports and exports against ABI v1 without running it.
pub fn check_module(module: &Module, kind: SlotKind) -> Result<(), LoadError> {
    for import in module.imports() {
        let allowed = import.module() == names::IMPORT_MODULE
            && match (import.name(), import.ty()) {
                (names::LOG, ExternType::Func(f)) => {
                    f.params().len() == 3
                        && f.params().all(|p| matches!(p, ValType::I32))
                        && f.results().len() == 0
                }
                (names::NOW_MS, ExternType::Func(f)) => {
                    f.params().len() == 0
                        && f.results().len() == 1
                        && f.results().all(|r| matches!(r, ValType::I64))
                }
                _ => false,
            };
        if !allowed {
            return Err(LoadError::ForbiddenImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    let export = |name: &'static str| module.exports().find(|e| e.name() == name);
    match export(names::MEMORY).map(|e| e.ty()) {
        Some(ExternType::Memory(_)) => {}
        Some(_) => return Err(LoadError::WrongExportType(names::MEMORY)),
        None => return Err(LoadError::MissingExport(names::MEMORY)),
    }
    let func = |name: &'static str, params: usize, required: bool| -> Result<(), LoadError> {
        match export(name).map(|e| e.ty()) {
            Some(ExternType::Func(f)) => {
                let ok = f.params().len() == params
                    && f.params().all(|p| matches!(p, ValType::I32))
                    && f.results().len() == 1
                    && f.results().all(|r| matches!(r, ValType::I32));
                if ok {
                    Ok(())
                } else {
                    Err(LoadError::WrongExportType(name))
                }
            }
            Some(_) => Err(LoadError::WrongExportType(name)),
            None if required => Err(LoadError::MissingExport(name)),
            None => Ok(()),
        }
    };
    func(names::ABI_VERSION, 0, true)?;
    func(names::QUERY_BUFFER, 0, true)?;
    func(kind.export(), 0, true)?;
    func(names::CONFIG_BUFFER, 1, false)?;
    func(names::INIT, 1, false)?;
    func(names::SELF_TEST, 0, false)?;
    Ok(())
}

/// Turns an artifact from `iipnic policy build` into a module for `engine`.
///
/// # Safety
///
/// The bytes must come from the trusted precompiler for this engine's configuration
/// ([`super::wasm_config::engine_config`]): wasmtime trusts compiled code. The sandbox
/// protects the node from a module's *behaviour*, not from forged artifacts.
pub unsafe fn load_artifact(engine: &Engine, bytes: &[u8]) -> Result<Module, LoadError> {
    // SAFETY: forwarded to the caller.
    unsafe { Module::deserialize(engine, bytes) }.map_err(|e| LoadError::Invalid(e.to_string()))
}

impl WasmPolicy {
    /// An engine with both slots empty (native behaviour).
    pub fn new(engine: Engine) -> Result<Self, LoadError> {
        Ok(WasmPolicy {
            linker: linker(&engine)?,
            engine,
            spd: Slot::default(),
            route: Slot::default(),
            generation: 0,
            logs: Vec::with_capacity(LOG_CAPACITY),
            spd_blob: Vec::new(),
        })
    }

    /// The engine modules must be compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Advances the epoch: call from a periodic timer so `epoch_ticks` bounds wall time.
    #[cfg(target_has_atomic = "64")]
    pub fn tick(&self) {
        self.engine.increment_epoch();
    }

    /// Validates, instantiates, configures and self-tests `module`, then swaps it into the
    /// slot in one step: the previous module answers every question until this returns
    /// `Ok`, and cached decisions are invalidated. On `Err` nothing changes.
    /// ([`WasmPolicy::prepare`] + [`WasmPolicy::install`] in one call.)
    pub fn load(
        &mut self,
        kind: SlotKind,
        module: Module,
        config: ConfigSource,
        settings: SlotSettings,
        spd: &Spd,
        now_ms: u64,
    ) -> Result<(), LoadError> {
        let prepared = Self::prepare(&self.engine, kind, module, config, settings, spd, now_ms)?;
        drop(self.install(prepared));
        Ok(())
    }

    /// Does all the slow work of a swap — checks, instantiation, init, self-test — without
    /// touching a running engine, so a control thread can do it while packets flow.
    pub fn prepare(
        engine: &Engine,
        kind: SlotKind,
        module: Module,
        config: ConfigSource,
        settings: SlotSettings,
        spd: &Spd,
        now_ms: u64,
    ) -> Result<Prepared, LoadError> {
        check_module(&module, kind)?;
        let linker = linker(engine)?;
        let mut loaded = Loaded {
            module,
            config,
            settings,
            instance: None,
            failures: 0,
            retry_at_ms: 0,
        };
        let mut scratch = Vec::new();
        loaded.instance = Some(start(
            engine,
            &linker,
            &loaded,
            kind,
            spd,
            &mut scratch,
            now_ms,
        )?);
        Ok(Prepared { kind, loaded })
    }

    /// Swaps a prepared module in: constant time, so the packet path pauses only for a
    /// move and a generation bump. The old module answers until this call and is handed
    /// back, so the caller can drop it off the packet path (tearing down a store costs
    /// tens of microseconds) or keep it to roll back.
    #[must_use = "drop the replaced module off the packet path, or keep it to roll back"]
    pub fn install(&mut self, prepared: Prepared) -> Option<Prepared> {
        let kind = prepared.kind;
        let slot = self.slot_mut(kind);
        let old = slot.live.replace(prepared.loaded);
        slot.counters.swaps += 1;
        self.generation += 1;
        old.map(|loaded| Prepared { kind, loaded })
    }

    /// Empties a slot: native behaviour from the next decision on.
    pub fn unload(&mut self, kind: SlotKind) {
        let slot = self.slot_mut(kind);
        slot.live = None;
        slot.shadow = None;
        self.generation += 1;
    }

    /// Loads a candidate next to the live module: it sees the same cache misses, its
    /// answers are compared but never used. See [`WasmPolicy::shadow_mismatches`].
    pub fn load_shadow(
        &mut self,
        kind: SlotKind,
        module: Module,
        config: ConfigSource,
        settings: SlotSettings,
        spd: &Spd,
        now_ms: u64,
    ) -> Result<(), LoadError> {
        let prepared = Self::prepare(&self.engine, kind, module, config, settings, spd, now_ms)?;
        let slot = self.slot_mut(kind);
        slot.shadow = Some(prepared.loaded);
        slot.mismatches.clear();
        // Cached answers would hide misses from the shadow.
        self.generation += 1;
        Ok(())
    }

    /// Makes the shadow the live module (already instantiated and tested: the swap itself
    /// cannot fail half-way).
    pub fn promote_shadow(&mut self, kind: SlotKind) -> Result<(), LoadError> {
        let slot = self.slot_mut(kind);
        let shadow = slot.shadow.take().ok_or(LoadError::NoShadow)?;
        slot.live = Some(shadow);
        slot.counters.swaps += 1;
        self.generation += 1;
        Ok(())
    }

    /// Drops the shadow.
    pub fn drop_shadow(&mut self, kind: SlotKind) {
        self.slot_mut(kind).shadow = None;
    }

    /// Recent disagreements between the shadow and the live module (oldest first).
    pub fn shadow_mismatches(&self, kind: SlotKind) -> &[ShadowMismatch] {
        &self.slot(kind).mismatches
    }

    /// Counters of a slot.
    pub fn counters(&self, kind: SlotKind) -> SlotCounters {
        self.slot(kind).counters
    }

    /// True when a module (not the native fallback) serves the slot.
    pub fn is_loaded(&self, kind: SlotKind) -> bool {
        self.slot(kind).live.is_some()
    }

    /// Takes the log lines modules wrote since the last call.
    pub fn drain_logs(&mut self) -> Vec<LogLine> {
        core::mem::take(&mut self.logs)
    }

    fn slot(&self, kind: SlotKind) -> &Slot {
        match kind {
            SlotKind::Spd => &self.spd,
            SlotKind::Route => &self.route,
        }
    }

    fn slot_mut(&mut self, kind: SlotKind) -> &mut Slot {
        match kind {
            SlotKind::Spd => &mut self.spd,
            SlotKind::Route => &mut self.route,
        }
    }
}

/// A module ready to be swapped in (see [`WasmPolicy::prepare`]).
pub struct Prepared {
    kind: SlotKind,
    loaded: Loaded,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The import set of ABI v1: `iipnic.log` and `iipnic.now_ms`, nothing else.
fn linker(engine: &Engine) -> Result<Linker<Guest>, LoadError> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            names::IMPORT_MODULE,
            names::LOG,
            |mut caller: Caller<'_, Guest>, level: i32, ptr: i32, len: i32| {
                let mut line = [0u8; LOG_LINE_MAX];
                let mut copied = 0;
                if let Some(memory) = caller
                    .get_export(names::MEMORY)
                    .and_then(|e| e.into_memory())
                {
                    let data = memory.data(&caller);
                    let start = usize::try_from(ptr).unwrap_or(usize::MAX);
                    let len = usize::try_from(len).unwrap_or(0).min(LOG_LINE_MAX);
                    if let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end))
                    {
                        if let Some(dst) = line.get_mut(..bytes.len()) {
                            dst.copy_from_slice(bytes);
                        }
                        copied = bytes.len();
                    }
                }
                let guest = caller.data_mut();
                if guest.log.len() < LOG_CAPACITY {
                    guest.log.push((level, line, copied));
                } else {
                    guest.log_dropped += 1;
                }
            },
        )
        .and_then(|l| {
            l.func_wrap(
                names::IMPORT_MODULE,
                names::NOW_MS,
                |caller: Caller<'_, Guest>| i64::try_from(caller.data().now_ms).unwrap_or(i64::MAX),
            )
        })
        .map_err(|e| LoadError::Instantiate(e.to_string()))?;
    Ok(linker)
}

/// Instantiates, configures and self-tests a module: a ready instance or an error.
fn start(
    engine: &Engine,
    linker: &Linker<Guest>,
    loaded: &Loaded,
    kind: SlotKind,
    spd: &Spd,
    scratch: &mut Vec<u8>,
    now_ms: u64,
) -> Result<Live, LoadError> {
    let mut live = instantiate(
        engine,
        linker,
        &loaded.module,
        loaded.settings,
        kind,
        now_ms,
    )?;
    configure(&mut live, &loaded.config, loaded.settings, spd, scratch)?;
    self_test(&mut live, loaded.settings)?;
    Ok(live)
}

/// A fresh store and instance, with the ABI version and query buffer checked.
fn instantiate(
    engine: &Engine,
    linker: &Linker<Guest>,
    module: &Module,
    settings: SlotSettings,
    kind: SlotKind,
    now_ms: u64,
) -> Result<Live, LoadError> {
    let guest = Guest {
        limits: StoreLimitsBuilder::new()
            .memory_size(settings.memory_limit)
            .memories(1)
            .tables(4)
            .instances(1)
            .build(),
        now_ms,
        log: Vec::with_capacity(LOG_CAPACITY),
        log_dropped: 0,
    };
    let mut store = Store::new(engine, guest);
    store.limiter(|g| &mut g.limits);
    arm(&mut store, settings.fuel_for_init, settings.epoch_ticks);
    let instance: Instance =
        linker
            .instantiate(&mut store, module)
            .map_err(|e| match e.downcast_ref::<Trap>() {
                Some(_) => LoadError::Trapped(TrapKind::of(&e)),
                None => LoadError::Instantiate(e.to_string()),
            })?;
    let typed = |store: &mut Store<Guest>, name: &'static str| {
        instance
            .get_typed_func::<(), i32>(&mut *store, name)
            .map_err(|_| LoadError::WrongExportType(name))
    };
    let version = typed(&mut store, names::ABI_VERSION)?
        .call(&mut store, ())
        .map_err(|e| LoadError::Trapped(TrapKind::of(&e)))?;
    let (major, minor) = ((version as u32 >> 16) as u16, version as u16);
    if major != abi::ABI_MAJOR || minor > abi::ABI_MINOR {
        return Err(LoadError::UnsupportedAbi { major, minor });
    }
    let memory = instance
        .get_memory(&mut store, names::MEMORY)
        .ok_or(LoadError::MissingExport(names::MEMORY))?;
    let query_at = typed(&mut store, names::QUERY_BUFFER)?
        .call(&mut store, ())
        .map_err(|e| LoadError::Trapped(TrapKind::of(&e)))?;
    let query_at = usize::try_from(query_at).map_err(|_| LoadError::BadQueryBuffer)?;
    if query_at
        .checked_add(abi::QUERY_BUFFER_LEN)
        .is_none_or(|end| end > memory.data_size(&store))
    {
        return Err(LoadError::BadQueryBuffer);
    }
    let decide = typed(&mut store, kind.export())?;
    let optional = |store: &mut Store<Guest>, name: &'static str| {
        instance.get_typed_func::<i32, i32>(&mut *store, name).ok()
    };
    let config_buffer = optional(&mut store, names::CONFIG_BUFFER);
    let init = optional(&mut store, names::INIT);
    let self_test = instance
        .get_typed_func::<(), i32>(&mut store, names::SELF_TEST)
        .ok();
    Ok(Live {
        store,
        memory,
        query_at,
        decide,
        config_buffer,
        init,
        self_test,
        spd_generation: None,
    })
}

/// Sets the fuel budget and epoch deadline of the next call.
fn arm(store: &mut Store<Guest>, fuel: u64, epoch_ticks: u64) {
    // Fuel is enabled by the shared Config, so this cannot fail; a failure would show up
    // as the call trapping, which is counted.
    let _ = store.set_fuel(fuel);
    // Epochs need 64-bit atomics; 32-bit MCUs rely on fuel alone.
    #[cfg(target_has_atomic = "64")]
    store.set_epoch_deadline(epoch_ticks);
    #[cfg(not(target_has_atomic = "64"))]
    let _ = epoch_ticks;
}

/// Hands the configuration blob to `iipnic_init` (the node's SPD for `NodeSpd`).
fn configure(
    live: &mut Live,
    config: &ConfigSource,
    settings: SlotSettings,
    spd: &Spd,
    scratch: &mut Vec<u8>,
) -> Result<(), LoadError> {
    let blob: &[u8] = match config {
        ConfigSource::Blob(bytes) => bytes,
        ConfigSource::NodeSpd => {
            encode_spd(spd, scratch);
            live.spd_generation = Some(spd.generation());
            scratch
        }
    };
    let Some(init) = live.init.clone() else {
        return if blob.is_empty() {
            Ok(())
        } else {
            Err(LoadError::MissingExport(names::INIT))
        };
    };
    let len = i32::try_from(blob.len()).map_err(|_| LoadError::ConfigTooLarge(blob.len()))?;
    arm(
        &mut live.store,
        settings.fuel_for_init,
        settings.epoch_ticks,
    );
    if !blob.is_empty() {
        let buffer = live
            .config_buffer
            .clone()
            .ok_or(LoadError::MissingExport(names::CONFIG_BUFFER))?;
        let at = buffer
            .call(&mut live.store, len)
            .map_err(|e| LoadError::Trapped(TrapKind::of(&e)))?;
        let at = usize::try_from(at)
            .ok()
            .filter(|&a| a != 0)
            .ok_or(LoadError::ConfigTooLarge(blob.len()))?;
        let target = live
            .memory
            .data_mut(&mut live.store)
            .get_mut(at..at + blob.len())
            .ok_or(LoadError::ConfigTooLarge(blob.len()))?;
        target.copy_from_slice(blob);
    }
    match init.call(&mut live.store, len) {
        Ok(0) => Ok(()),
        Ok(code) => Err(LoadError::InitFailed(code)),
        Err(e) => Err(LoadError::Trapped(TrapKind::of(&e))),
    }
}

fn self_test(live: &mut Live, settings: SlotSettings) -> Result<(), LoadError> {
    let Some(test) = live.self_test.clone() else {
        return Ok(());
    };
    arm(
        &mut live.store,
        settings.fuel_for_init,
        settings.epoch_ticks,
    );
    match test.call(&mut live.store, ()) {
        Ok(0) => Ok(()),
        Ok(code) => Err(LoadError::SelfTestFailed(code)),
        Err(e) => Err(LoadError::Trapped(TrapKind::of(&e))),
    }
}

/// Encodes the node's SPD as the `spd-rules` configuration blob.
pub fn encode_spd(spd: &Spd, out: &mut Vec<u8>) {
    out.clear();
    let entries = spd.entries();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        let rule = abi::SpdRule {
            id: e.id.0,
            direction: match e.direction {
                Direction::Outbound => abi::Direction::Outbound,
                Direction::Inbound => abi::Direction::Inbound,
            },
            protocol: e.selector.protocol,
            src: addr(e.selector.src.addr()),
            src_len: e.selector.src.prefix_len(),
            dst: addr(e.selector.dst.addr()),
            dst_len: e.selector.dst.prefix_len(),
            action: match e.action {
                Action::Discard => abi::SpdAction::Discard,
                Action::Bypass => abi::SpdAction::Bypass,
                Action::Protect { sa } => abi::SpdAction::Protect {
                    sa: sa.map(|s| s.0),
                },
            },
        };
        let mut encoded = [0u8; abi::SpdRule::LEN];
        if rule.encode(&mut encoded).is_some() {
            out.extend_from_slice(&encoded);
        }
    }
}

fn addr(ip: IpAddr) -> abi::Addr {
    match ip {
        IpAddr::V4(a) => abi::Addr::v4(a.octets()),
        IpAddr::V6(a) => abi::Addr::v6(a.octets()),
    }
}

impl Loaded {
    /// Schedules the next re-instantiation: 1x, 2x, 4x ... the initial backoff, capped.
    fn failed(&mut self, now_ms: u64) {
        self.instance = None;
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(20);
        let wait = self
            .settings
            .backoff_initial_ms
            .saturating_mul(1 << shift)
            .min(self.settings.backoff_max_ms);
        self.retry_at_ms = now_ms.saturating_add(wait);
    }
}

/// Everything one call needs besides the module.
struct CallContext<'a> {
    engine: &'a Engine,
    linker: &'a Linker<Guest>,
    kind: SlotKind,
    spd: &'a Spd,
    scratch: &'a mut Vec<u8>,
    logs: &'a mut Vec<LogLine>,
    now_ms: u64,
}

/// Asks a module one question: writes the query, calls the export under its budget and
/// returns the whole buffer (the decision is at `DECISION_OFFSET`).
fn ask(
    ctx: &mut CallContext<'_>,
    loaded: &mut Loaded,
    counters: &mut SlotCounters,
    write_query: &dyn Fn(&mut [u8]) -> Option<()>,
) -> Result<[u8; abi::QUERY_BUFFER_LEN], CallFailure> {
    if loaded.instance.is_none() {
        if ctx.now_ms < loaded.retry_at_ms {
            return Err(CallFailure::Unavailable);
        }
        match start(
            ctx.engine,
            ctx.linker,
            loaded,
            ctx.kind,
            ctx.spd,
            ctx.scratch,
            ctx.now_ms,
        ) {
            Ok(live) => {
                loaded.instance = Some(live);
                counters.reloads += 1;
            }
            Err(_) => {
                counters.reload_failures += 1;
                loaded.failed(ctx.now_ms);
                return Err(CallFailure::Unavailable);
            }
        }
    }
    let settings = loaded.settings;
    let Some(live) = loaded.instance.as_mut() else {
        return Err(CallFailure::Unavailable);
    };
    if loaded.config == ConfigSource::NodeSpd && live.spd_generation != Some(ctx.spd.generation()) {
        counters.reconfigurations += 1;
        if configure(live, &loaded.config, settings, ctx.spd, ctx.scratch).is_err() {
            loaded.failed(ctx.now_ms);
            return Err(CallFailure::Unavailable);
        }
    }
    live.store.data_mut().now_ms = ctx.now_ms;
    let query_at = live.query_at;
    let written = live
        .memory
        .data_mut(&mut live.store)
        .get_mut(query_at..query_at + abi::QUERY_BUFFER_LEN)
        .and_then(|buf| {
            buf.fill(0);
            write_query(buf)
        });
    if written.is_none() {
        // The module shrank nothing (memories cannot shrink), so this is a host bug.
        return Err(CallFailure::BadOutput);
    }
    arm(
        &mut live.store,
        settings.fuel_per_call,
        settings.epoch_ticks,
    );
    counters.calls += 1;
    let result = live.decide.call(&mut live.store, ());
    let left = live.store.get_fuel().unwrap_or(0);
    counters.fuel_used += settings.fuel_per_call.saturating_sub(left);
    collect_logs(live, ctx.kind, ctx.logs, counters);
    match result {
        Ok(0) => {
            let mut out = [0u8; abi::QUERY_BUFFER_LEN];
            let buf = live
                .memory
                .data(&live.store)
                .get(query_at..query_at + abi::QUERY_BUFFER_LEN);
            match buf {
                Some(buf) => {
                    out.copy_from_slice(buf);
                    loaded.failures = 0;
                    Ok(out)
                }
                None => Err(CallFailure::BadOutput),
            }
        }
        Ok(_) => {
            counters.bad_outputs += 1;
            Err(CallFailure::BadOutput)
        }
        Err(e) => {
            let kind = TrapKind::of(&e);
            counters.count_trap(kind);
            // A trapped instance may hold broken state: start over after the backoff.
            loaded.failed(ctx.now_ms);
            Err(CallFailure::Trapped)
        }
    }
}

fn collect_logs(
    live: &mut Live,
    slot: SlotKind,
    logs: &mut Vec<LogLine>,
    counters: &mut SlotCounters,
) {
    let guest = live.store.data_mut();
    counters.log_lines_dropped += core::mem::take(&mut guest.log_dropped);
    for (level, bytes, len) in guest.log.drain(..) {
        if logs.len() >= LOG_CAPACITY {
            counters.log_lines_dropped += 1;
            continue;
        }
        let text = String::from_utf8_lossy(bytes.get(..len).unwrap_or_default()).into_owned();
        logs.push(LogLine { slot, level, text });
    }
}

fn spd_query(q: &SpdQuery) -> abi::SpdQuery {
    abi::SpdQuery {
        direction: match q.direction {
            Direction::Outbound => abi::Direction::Outbound,
            Direction::Inbound => abi::Direction::Inbound,
        },
        protocol: q.key.protocol,
        protected: q.protected,
        src: addr(q.key.src),
        dst: addr(q.key.dst),
    }
}

fn spd_decision(d: abi::SpdDecision) -> SpdDecision {
    SpdDecision {
        action: match d.action {
            abi::SpdAction::Discard => Action::Discard,
            abi::SpdAction::Bypass => Action::Bypass,
            abi::SpdAction::Protect { sa } => Action::Protect { sa: sa.map(SaId) },
        },
        entry: d.entry.map(SpdEntryId),
        cacheable: d.cacheable,
    }
}

fn route_query(q: &RouteQuery<'_>) -> abi::RouteQuery {
    let mut candidates = [abi::Candidate::default(); abi::MAX_CANDIDATES];
    for (slot, c) in candidates.iter_mut().zip(q.candidates) {
        *slot = abi::Candidate {
            vif: c.next_hop.vif.0,
            up: c.up,
            metric: c.next_hop.metric,
            weight: c.next_hop.weight,
        };
    }
    let count = q.candidates.len().min(abi::MAX_CANDIDATES);
    abi::RouteQuery::new(
        q.protocol,
        q.flow_hash,
        addr(q.src),
        addr(q.dst),
        candidates.get(..count).unwrap_or_default(),
    )
}

impl PolicyEngine for WasmPolicy {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn spd_decide(&mut self, spd: &Spd, query: &SpdQuery) -> SpdDecision {
        let WasmPolicy {
            engine,
            linker,
            spd: slot,
            spd_blob,
            logs,
            ..
        } = self;
        let Some(live) = slot.live.as_mut() else {
            return NativePolicy.spd_decide(spd, query);
        };
        let mut ctx = CallContext {
            engine,
            linker,
            kind: SlotKind::Spd,
            spd,
            scratch: spd_blob,
            logs,
            now_ms: query.now_ms,
        };
        let abi_query = spd_query(query);
        let write = |buf: &mut [u8]| abi_query.encode(buf);
        let answer =
            |ctx: &mut CallContext<'_>, loaded: &mut Loaded, counters: &mut SlotCounters| {
                let bytes = ask(ctx, loaded, counters, &write)?;
                match abi::SpdDecision::decode(&bytes) {
                    Some(d) => Ok(spd_decision(d)),
                    None => {
                        counters.bad_outputs += 1;
                        Err(CallFailure::BadOutput)
                    }
                }
            };
        let fail = live.settings.fail;
        let decision = answer(&mut ctx, live, &mut slot.counters).unwrap_or_else(|_| {
            slot.counters.failure_decisions += 1;
            let action = match fail {
                FailMode::Closed => Action::Discard,
                FailMode::Open => Action::Bypass,
            };
            SpdDecision {
                action,
                entry: None,
                cacheable: false,
            }
        });
        if let Some(shadow) = slot.shadow.as_mut() {
            slot.counters.shadow_calls += 1;
            let mut shadow_counters = SlotCounters::default();
            let theirs = answer(&mut ctx, shadow, &mut shadow_counters).ok();
            if theirs.map(|d| d.action) != Some(decision.action) {
                slot.counters.shadow_mismatches += 1;
                record(
                    &mut slot.mismatches,
                    ShadowMismatch {
                        src: query.key.src,
                        dst: query.key.dst,
                        live: AnyDecision::Spd(decision),
                        shadow: theirs.map(AnyDecision::Spd),
                    },
                );
            }
        }
        decision
    }

    fn route_select(&mut self, query: &RouteQuery<'_>) -> RouteDecision {
        let WasmPolicy {
            engine,
            linker,
            route: slot,
            spd_blob,
            logs,
            ..
        } = self;
        let Some(live) = slot.live.as_mut() else {
            return NativePolicy.route_select(query);
        };
        // Route modules never see the SPD; an empty one keeps the context uniform.
        let no_spd = Spd::default();
        let mut ctx = CallContext {
            engine,
            linker,
            kind: SlotKind::Route,
            spd: &no_spd,
            scratch: spd_blob,
            logs,
            now_ms: query.now_ms,
        };
        let abi_query = route_query(query);
        let write = |buf: &mut [u8]| abi_query.encode(buf);
        let candidates = query.candidates.len();
        let answer =
            |ctx: &mut CallContext<'_>, loaded: &mut Loaded, counters: &mut SlotCounters| {
                let bytes = ask(ctx, loaded, counters, &write)?;
                match abi::RouteDecision::decode(&bytes) {
                    Some(d) if d.choice.is_none_or(|c| usize::from(c) < candidates) => {
                        Ok(RouteDecision {
                            choice: d.choice.map(usize::from),
                            cacheable: d.cacheable,
                        })
                    }
                    _ => {
                        counters.bad_outputs += 1;
                        Err(CallFailure::BadOutput)
                    }
                }
            };
        let fail = live.settings.fail;
        let decision = answer(&mut ctx, live, &mut slot.counters).unwrap_or_else(|_| {
            slot.counters.failure_decisions += 1;
            match fail {
                FailMode::Closed => RouteDecision {
                    choice: None,
                    cacheable: false,
                },
                FailMode::Open => RouteDecision {
                    cacheable: false,
                    ..NativePolicy.route_select(query)
                },
            }
        });
        if let Some(shadow) = slot.shadow.as_mut() {
            slot.counters.shadow_calls += 1;
            let mut shadow_counters = SlotCounters::default();
            let theirs = answer(&mut ctx, shadow, &mut shadow_counters).ok();
            if theirs.map(|d| d.choice) != Some(decision.choice) {
                slot.counters.shadow_mismatches += 1;
                record(
                    &mut slot.mismatches,
                    ShadowMismatch {
                        src: query.src,
                        dst: query.dst,
                        live: AnyDecision::Route(decision.choice),
                        shadow: theirs.map(|d| AnyDecision::Route(d.choice)),
                    },
                );
            }
        }
        decision
    }
}

fn record(mismatches: &mut Vec<ShadowMismatch>, m: ShadowMismatch) {
    if mismatches.len() >= SHADOW_REPORT_LEN {
        mismatches.remove(0);
    }
    mismatches.push(m);
}
