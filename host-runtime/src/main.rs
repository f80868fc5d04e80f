//! `iipnic`: the command-line front end of the host runtime.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iipnic::config::Network;
use iipnic::emulator::topology::{Rng, Topology};
use iipnic::emulator::{Emulator, Options, chart};
use iipnic::replay::{self, Direction};
use iipnic::{demo, pcap, policy};
use std::io::IsTerminal;

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
    /// The main demo: the default topology with traffic, a module swap, a link cut and an
    /// SA rekey under load; summary, chart, pcaps and keys. `--linux`: the Linux capture.
    Demo {
        /// Show the fast path on the Linux 6.1 reference capture instead.
        #[arg(long)]
        linux: bool,
        /// Where to write pcaps, keys, report and chart.
        #[arg(long, default_value = "iipnic-demo")]
        out: PathBuf,
        /// Seed of keys and link randomness.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Emulate a network: TOPOLOGY (TOML) or the built-in triangle.
    Emulate {
        /// Topology file; the built-in three-node triangle when absent.
        topology: Option<PathBuf>,
        /// Virtual time to run, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        duration: u64,
        /// Print the final report as JSON (no status line).
        #[arg(long)]
        json: bool,
        /// Write one pcap per link and a Wireshark esp_sa keys file here.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Write an SVG chart of throughput and drops.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Seed of keys and link randomness.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print the ESP keys of a topology as Wireshark esp_sa lines.
    Keys {
        /// Wireshark's esp_sa format (the only one so far).
        #[arg(long)]
        wireshark: bool,
        /// Topology file; the built-in triangle when absent.
        topology: Option<PathBuf>,
        /// Seed the built-in triangle's keys come from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
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
        Command::Demo { linux: true, .. } => demo::run_linux(&mut std::io::stdout()),
        Command::Demo { out, seed, .. } => std::fs::create_dir_all(&out)
            .map_err(|e| format!("{}: {e}", out.display()))
            .and_then(|()| demo::run_network(&mut std::io::stdout(), &out, seed).map(|_| ())),
        Command::Emulate {
            topology,
            duration,
            json,
            pcap,
            chart,
            seed,
        } => run_emulate(topology, duration, json, pcap, chart, seed),
        Command::Keys { topology, seed, .. } => load_topology(topology, seed)
            .and_then(|t| {
                Emulator::new(
                    t,
                    Options {
                        seed,
                        ..Options::default()
                    },
                )
            })
            .map(|e| print!("{}", e.wireshark_keys())),
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

fn load_topology(path: Option<PathBuf>, seed: u64) -> Result<Topology, String> {
    match path {
        Some(path) => Topology::load(&path).map_err(|e| e.to_string()),
        None => Ok(Topology::default_triangle(&mut Rng::new(seed))),
    }
}

fn run_emulate(
    topology: Option<PathBuf>,
    duration: u64,
    json: bool,
    pcap: Option<PathBuf>,
    chart_path: Option<PathBuf>,
    seed: u64,
) -> Result<(), String> {
    let topology = load_topology(topology, seed)?;
    let options = Options {
        duration_ms: duration,
        seed,
        pcap_dir: pcap,
        sample_ms: 100,
    };
    let start = std::time::Instant::now();
    let mut emulator = Emulator::new(topology, options)?;
    let live = !json && std::io::stdout().is_terminal();
    let mut last_second = 0;
    emulator.run(&mut |e| {
        if live && e.now_ms() / 1000 != last_second {
            last_second = e.now_ms() / 1000;
            print!("\r{}", e.status_line());
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    });
    if live {
        println!();
    }
    let report = emulator.finish(start.elapsed())?;
    if let Some(path) = &chart_path {
        std::fs::write(path, chart::svg(&report, "iipnic emulate"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.summary());
        for f in &report.files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}
