//! The one wasmtime [`Config`] that the host precompiler and the device runtime both build.
//!
//! `Module::deserialize` refuses an artifact compiled under a different configuration, so
//! every setting that shapes compiled code lives here and nowhere else. Setting a target
//! explicitly turns off wasmtime's automatic no-virtual-memory defaults, so they are set
//! by hand: boards have no MMU-backed guard pages and no signal handlers.

use wasmtime::{Config, Result};

/// What an artifact is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactTarget {
    /// Pulley bytecode for 64-bit devices (aarch64, riscv64): portable, interpreted.
    Pulley64,
    /// Pulley bytecode for 32-bit devices (Cortex-M, riscv32).
    Pulley32,
    /// Native AArch64 code for bare-metal Cortex-A boards.
    Aarch64,
    /// Native code for the workstation running the emulator.
    Host,
}

impl ArtifactTarget {
    /// The wasmtime target triple.
    pub fn triple(self) -> &'static str {
        match self {
            ArtifactTarget::Pulley64 => "pulley64",
            ArtifactTarget::Pulley32 => "pulley32",
            ArtifactTarget::Aarch64 => "aarch64-unknown-none",
            ArtifactTarget::Host => HOST_TRIPLE,
        }
    }

    /// Epoch deadlines need 64-bit atomics, which 32-bit MCUs lack; fuel works everywhere.
    pub fn has_epochs(self) -> bool {
        !matches!(self, ArtifactTarget::Pulley32)
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";
#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
const HOST_TRIPLE: &str = "aarch64-unknown-linux-gnu";
#[cfg(not(any(
    all(target_arch = "x86_64", target_os = "linux"),
    all(target_arch = "aarch64", target_os = "linux")
)))]
const HOST_TRIPLE: &str = "pulley64";

/// Stack for wasm frames; Pulley allocates it per store, so boards keep it small.
pub const MAX_WASM_STACK: usize = 32 * 1024;

/// Builds the shared configuration for `target`.
pub fn engine_config(target: ArtifactTarget) -> Result<Config> {
    let mut config = Config::new();
    config
        .target(target.triple())?
        .signals_based_traps(false)
        .memory_reservation(0)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .memory_init_cow(false)
        .guard_before_linear_memory(false)
        .wasm_custom_page_sizes(false)
        .max_wasm_stack(MAX_WASM_STACK)
        .consume_fuel(true)
        .epoch_interruption(target.has_epochs());
    Ok(config)
}
