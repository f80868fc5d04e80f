//! Policy modules on the workstation: finding the ones `cargo xtask policies` built, and
//! precompiling them with cranelift for a board (`iipnic policy build`).

use std::path::{Path, PathBuf};

use iipnic_firmware::policy::wasm::{
    ConfigSource, LoadError, SlotKind, SlotSettings, WasmPolicy, check_module,
};
use iipnic_firmware::policy::wasm_config::{ArtifactTarget, engine_config};
use iipnic_firmware::spd::Spd;
use iipnic_policy_sdk::abi;
use wasmtime::Engine;

/// Environment variable that points the host at a directory of `.wasm` modules.
pub const MODULE_DIR_ENV: &str = "IIPNIC_POLICY_DIR";

/// Where the example modules are: `$IIPNIC_POLICY_DIR`, or the policies-wasm workspace's
/// release output next to this crate (what `cargo xtask policies` produces).
pub fn module_dir() -> PathBuf {
    std::env::var_os(MODULE_DIR_ENV).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../policies-wasm/target/wasm32-unknown-unknown/release")
        },
        PathBuf::from,
    )
}

/// Where the hand-written `.wat` modules are.
pub fn wat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies-wasm/wat")
}

/// Every `.wasm` file in `dir` and every `.wat` module of the policies workspace, sorted
/// by name.
pub fn list_modules(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{}: {e} (build the example modules with `cargo xtask policies`)",
            dir.display()
        )
    })?;
    let mut modules: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    // Hand-written modules in WebAssembly text live beside the Rust ones.
    if let Ok(wat) = std::fs::read_dir(wat_dir()) {
        modules.extend(
            wat.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wat")),
        );
    }
    modules.sort();
    Ok(modules)
}

/// Finds a module by file stem (`route_first`) or path.
pub fn find_module(name: &str) -> Result<PathBuf, String> {
    let as_path = Path::new(name);
    if as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    let dir = module_dir();
    let stem = name
        .trim_end_matches(".wasm")
        .trim_end_matches(".wat")
        .replace('-', "_");
    list_modules(&dir)?
        .into_iter()
        .find(|p| p.file_stem().is_some_and(|s| s == stem.as_str()))
        .ok_or_else(|| format!("no module `{name}` in {}", dir.display()))
}

/// Parses a `--target` name.
pub fn parse_target(name: &str) -> Result<ArtifactTarget, String> {
    match name {
        "host" => Ok(ArtifactTarget::Host),
        "aarch64" => Ok(ArtifactTarget::Aarch64),
        "pulley64" => Ok(ArtifactTarget::Pulley64),
        "pulley32" => Ok(ArtifactTarget::Pulley32),
        _ => Err(format!(
            "unknown target `{name}`: expected host, aarch64, pulley64 or pulley32"
        )),
    }
}

/// Compiles a module for `target` with the configuration the device runtime uses.
pub fn precompile(wasm: &[u8], target: ArtifactTarget) -> Result<Vec<u8>, String> {
    let config = engine_config(target).map_err(|e| format!("configuring {target:?}: {e}"))?;
    let engine = Engine::new(&config).map_err(|e| format!("engine for {target:?}: {e}"))?;
    engine
        .precompile_module(wasm)
        .map_err(|e| format!("compiling for {target:?}: {e:#}"))
}

/// The engine the host runs modules on (emulator, `policy check`, `policy test`): native
/// code, with the same configuration rules as the boards.
pub fn host_engine() -> Result<Engine, String> {
    let config = engine_config(ArtifactTarget::Host).map_err(|e| e.to_string())?;
    Engine::new(&config).map_err(|e| e.to_string())
}

/// Reads and compiles a `.wasm` (or `.wat`) module for `engine`.
pub fn compile(engine: &Engine, path: &Path) -> Result<wasmtime::Module, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    wasmtime::Module::new(engine, &bytes)
        .map_err(|e| format!("{}: not a valid module: {e}", path.display()))
}

/// The slots a module can serve, from its exports.
pub fn slots_of(module: &wasmtime::Module) -> Vec<SlotKind> {
    [SlotKind::Spd, SlotKind::Route]
        .into_iter()
        .filter(|&kind| check_module(module, kind).is_ok())
        .collect()
}

/// `iipnic policy check`: everything that can be known about a module without traffic.
/// With `config`, init and self-test must pass too; without, their failure is reported
/// but not an error (many modules need a configuration).
pub fn check(
    path: &Path,
    config: Option<Vec<u8>>,
    settings: SlotSettings,
) -> Result<String, String> {
    let engine = host_engine()?;
    let module = compile(&engine, path)?;
    let mut report = String::new();
    let slots = slots_of(&module);
    let Some(&kind) = slots.first() else {
        // Explain why with the SPD slot's checks, which cover the common exports.
        let why = check_module(&module, SlotKind::Spd)
            .and_then(|()| check_module(&module, SlotKind::Route))
            .err()
            .map_or_else(|| "no decision export".to_string(), |e| e.to_string());
        return Err(format!("{}: {why}", path.display()));
    };
    let mut policy = WasmPolicy::new(engine).map_err(|e| e.to_string())?;
    let spd = Spd::default();
    let configured = config.is_some();
    let loaded = policy.load(
        kind,
        module.clone(),
        ConfigSource::Blob(config.unwrap_or_default()),
        settings,
        &spd,
        0,
    );
    let init_note = match loaded {
        Ok(()) => "ok".to_string(),
        Err(e @ (LoadError::InitFailed(_) | LoadError::SelfTestFailed(_))) if !configured => {
            format!("{e} with an empty configuration (give --config-hex to check a real one)")
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    report.push_str(&format!(
        "{}: ABI v{}.{} ok\n",
        path.display(),
        abi::ABI_MAJOR,
        abi::ABI_MINOR
    ));
    report.push_str(&format!("  init and self-test: {init_note}\n"));
    let slots: Vec<&str> = slots
        .iter()
        .map(|s| match s {
            SlotKind::Spd => "spd",
            SlotKind::Route => "route",
        })
        .collect();
    report.push_str(&format!("  serves: {}\n", slots.join(", ")));
    let imports: Vec<String> = module
        .imports()
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    report.push_str(&format!(
        "  imports: {}\n",
        if imports.is_empty() {
            "none".into()
        } else {
            imports.join(", ")
        }
    ));
    for export in module.exports() {
        if let wasmtime::ExternType::Memory(m) = export.ty() {
            report.push_str(&format!(
                "  memory: {} KiB initial (slot limit {} KiB)\n",
                m.minimum() * 64,
                settings.memory_limit / 1024
            ));
        }
    }
    Ok(report)
}
