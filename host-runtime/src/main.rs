//! `iipnic`: the command-line front end of the host runtime.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iipnic::config::Network;
use iipnic::replay::{self, Direction};
use iipnic::{demo, pcap, policy};

#[derive(Parser)]
#[command(
    name = "iipnic",
    version,
    about = "RFC 3884 IIPtran smart-NIC firmware: host tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pcap through the firmware pipelines of the nodes in a network file.
    Replay {
        /// Network description (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Input capture (pcap: Ethernet or raw IP).
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write every packet the nodes emit (raw IP pcap).
        #[arg(long)]
        out: PathBuf,
        /// Which side the input packets arrive on.
        #[arg(long, value_enum, default_value = "auto")]
        direction: Direction,
        /// Print the counters as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the fast path at work on the Linux 6.1 reference capture.
    Demo,
    /// Work with policy modules.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// List the modules the host finds (`$IIPNIC_POLICY_DIR` or the policies-wasm build).
    List,
    /// Check a module against the ABI: imports, exports, version, memory, init, self-test.
    Check {
        /// A `.wasm`/`.wat` path, or the name of a found module.
        module: String,
        /// Configuration blob to initialise it with, as hex.
        #[arg(long)]
        config_hex: Option<String>,
    },
    /// Run decisions offline and compare them with the expected ones.
    Test {
        /// A `.wasm`/`.wat` path, or the name of a found module.
        module: String,
        /// The cases (TOML; see docs/policy-abi.md).
        #[arg(long)]
        cases: PathBuf,
    },
    /// Precompile a module with cranelift for a device.
    Build {
        /// A `.wasm` path, or the name of a found module (`route_first`).
        module: String,
        /// host, aarch64, pulley64 or pulley32.
        #[arg(long, default_value = "pulley64")]
        target: String,
        /// Output artifact.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            config,
            input,
            out,
            direction,
            json,
        } => run_replay(config, input, out, direction, json),
        Command::Demo => demo::run(&mut std::io::stdout()),
        Command::Policy(command) => run_policy(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("iipnic: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_replay(
    config: PathBuf,
    input: PathBuf,
    out: PathBuf,
    direction: Direction,
    json: bool,
) -> Result<(), String> {
    let network = Network::load(&config).map_err(|e| e.to_string())?;
    let mut nodes = network.build_nodes(0).map_err(|e| e.to_string())?;
    let names: Vec<String> = network.file.nodes.iter().map(|n| n.name.clone()).collect();
    let file = File::open(&input).map_err(|e| format!("{}: {e}", input.display()))?;
    let records =
        pcap::read(BufReader::new(file)).map_err(|e| format!("{}: {e}", input.display()))?;
    let (report, emitted) = replay::replay(&mut nodes, &names, &records, direction);
    let file = File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut writer = pcap::Writer::new(BufWriter::new(file)).map_err(|e| e.to_string())?;
    for e in &emitted {
        writer
            .write(e.timestamp_us, &e.packet)
            .map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!(
            "{} packets in, {} emitted ({:?}), {} owned by no node; wrote {}",
            report.packets,
            emitted.len(),
            report.emitted,
            report.unowned,
            out.display()
        );
        for (name, snapshot) in &report.nodes {
            let drops: Vec<String> = snapshot
                .drops
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            println!("  {name}: drops [{}]", drops.join(", "));
        }
    }
    Ok(())
}

fn run_policy(command: PolicyCommand) -> Result<(), String> {
    match command {
        PolicyCommand::List => {
            let dir = policy::module_dir();
            for module in policy::list_modules(&dir)? {
                let size = std::fs::metadata(&module).map(|m| m.len()).unwrap_or(0);
                println!("{}\t{size} bytes", module.display());
            }
            Ok(())
        }
        PolicyCommand::Check { module, config_hex } => {
            let path = policy::find_module(&module)?;
            let config = config_hex
                .map(|h| hex::decode(h.trim()).map_err(|e| format!("--config-hex: {e}")))
                .transpose()?;
            print!("{}", policy::check(&path, config, Default::default())?);
            Ok(())
        }
        PolicyCommand::Test { module, cases } => {
            let path = policy::find_module(&module)?;
            let report = iipnic::policy_cases::run(&path, &cases)?;
            for line in &report.lines {
                println!("{line}");
            }
            if report.failed == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} cases failed",
                    report.failed,
                    report.failed + report.passed
                ))
            }
        }
        PolicyCommand::Build {
            module,
            target,
            output,
        } => {
            let target = policy::parse_target(&target)?;
            let path = policy::find_module(&module)?;
            let wasm = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let artifact = policy::precompile(&wasm, target)?;
            std::fs::write(&output, &artifact).map_err(|e| format!("{}: {e}", output.display()))?;
            println!(
                "{} -> {} ({target:?}, {} bytes)",
                path.display(),
                output.display(),
                artifact.len()
            );
            Ok(())
        }
    }
}
