//! `cargo xtask <task>`: the project's build orchestrator.
//!
//! | task       | what it does                                                        |
//! |------------|---------------------------------------------------------------------|
//! | `setup`    | installs what tests need: rustup targets, tshark, iproute2, ping,   |
//! |            | scapy and cryptography (pip)                                        |
//! | `policies` | builds the policy modules for wasm32 (the host finds them there)    |
//! | `demo`     | rustup targets + policies, then `iipnic demo`                       |
//! | `test`     | setup + policies, then every test of both workspaces                |
//!
//! CI (`.ci/run`) runs `test`, then formatting, lints, docs and the bare-metal builds.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Targets the workspace builds for besides the host (also listed in rust-toolchain.toml).
const TARGETS: &[&str] = &[
    "wasm32-unknown-unknown",
    "aarch64-unknown-none",
    "thumbv7em-none-eabihf",
];

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "setup" => setup(),
        "policies" => setup().and_then(|()| policies()),
        // The demo needs no test oracles: only the targets to build the policy modules.
        "demo" => rustup_targets()
            .and_then(|()| policies())
            .and_then(|()| demo()),
        "test" => setup().and_then(|()| policies()).and_then(|()| test()),
        _ => {
            eprintln!("usage: cargo xtask <setup|policies|demo|test>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: running {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// Debian packages the tests need: (command that must exist, package that provides it).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // The independent ESP decoder the emulator's pcaps are checked with.
    ("tshark", "tshark"),
    // TAP-mode test: network namespaces, and a real program pinging through the emulation.
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
];

/// Python packages the tests use as independent references (import name, pip name).
const PYTHON_PACKAGES: &[(&str, &str)] = &[("scapy", "scapy"), ("cryptography", "cryptography")];

/// Installs what is missing, or says exactly what to run.
fn setup() -> Result<(), String> {
    rustup_targets()?;
    debian_packages()?;
    python_packages()
}

fn python_packages() -> Result<(), String> {
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--quiet"]).args(&missing);
    run(cmd).map_err(|e| {
        format!(
            "{e}; run `python3 -m pip install {}` yourself",
            missing.join(" ")
        )
    })
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

fn debian_packages() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Err(format!(
            "missing {}; run as root: {install}",
            missing.join(", ")
        ));
    }
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &install]);
    run(cmd).map_err(|e| format!("{e}; run yourself: {install}"))
}

fn rustup_targets() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("rustup not found ({e}); install it from rustup.rs"))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        let mut cmd = Command::new("rustup");
        cmd.current_dir(root())
            .args(["target", "add"])
            .args(&missing);
        run(cmd).map_err(|e| {
            format!(
                "{e}; run `rustup target add {}` yourself",
                missing.join(" ")
            )
        })?;
    }
    Ok(())
}

/// Builds every policy module for wasm32; the host looks for them in
/// policies-wasm/target/wasm32-unknown-unknown/release.
fn policies() -> Result<(), String> {
    let mut cmd = cargo();
    cmd.current_dir(root().join("policies-wasm")).args([
        "build",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    run(cmd)
}

fn demo() -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "iipnic",
        "--",
        "demo",
        "--out",
        "iipnic-demo",
    ]);
    run(cmd)
}

/// Every test of the host workspace and of the policy workspace (on the host).
fn test() -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace"]);
    run(cmd)?;
    let mut cmd = cargo();
    cmd.current_dir(root().join("policies-wasm")).arg("test");
    run(cmd)
}
