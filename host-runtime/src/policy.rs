//! Policy modules on the workstation: finding the ones `cargo xtask policies` built, and
//! precompiling them with cranelift for a board (`iipnic policy build`).

use std::path::{Path, PathBuf};

use iipnic_firmware::policy::wasm_config::{ArtifactTarget, engine_config};
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

/// Every `.wasm` file in `dir`, sorted by name.
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
    let stem = name.trim_end_matches(".wasm").replace('-', "_");
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
