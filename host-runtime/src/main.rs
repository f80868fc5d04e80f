//! `iipnic`: the command-line front end of the host runtime.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iipnic::config::Network;
use iipnic::emulator::control::{self, Request};
use iipnic::emulator::topology::EventAction;
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
    Emulate(EmulateArgs),
    /// Control a running `iipnic emulate --control SOCKET`.
    Ctl {
        /// The emulation's control socket.
        #[arg(long)]
        socket: PathBuf,
        #[command(subcommand)]
        command: CtlCommand,
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

#[derive(clap::Args)]
struct EmulateArgs {
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
    /// Run paced to the wall clock and accept `iipnic ctl` requests on this Unix socket
    /// (`--duration 0`: until `iipnic ctl stop`).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Attach a node's host side to a TUN interface: NODE=IFNAME (repeatable; implies a
    /// paced run).
    #[arg(long = "tap", value_name = "NODE=IFNAME")]
    taps: Vec<String>,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Counters of one node (or all).
    Counters {
        /// Node name.
        node: Option<String>,
    },
    /// Time, rates and drops.
    Status,
    /// Set a link down or up.
    Link {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// `up` or `down`.
        state: String,
    },
    /// Hot-swap a policy module on a node.
    Swap {
        /// The node.
        node: String,
        /// `route` or `spd`.
        slot: String,
        /// Module name or path.
        module: String,
    },
    /// Rekey the SA pair from -> to, make-before-break.
    Rekey {
        /// Sender.
        from: String,
        /// Receiver.
        to: String,
    },
    /// Add a route on a node: PREFIX over these vifs.
    RouteAdd {
        /// The node.
        node: String,
        /// Destination prefix.
        prefix: String,
        /// Candidate vif ids, best first.
        #[arg(long = "vif", required = true)]
        vifs: Vec<u16>,
    },
    /// Remove the route for exactly PREFIX on a node.
    RouteRemove {
        /// The node.
        node: String,
        /// The prefix.
        prefix: String,
    },
    /// Apply any firmware control operation, given as JSON (see docs/emulator.md).
    Apply {
        /// The node.
        node: String,
        /// The operation, e.g. '{"op":"remove_sa","id":12}'.
        op: String,
    },
    /// End the emulation.
    Stop,
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
        Command::Emulate(args) => run_emulate(args),
        Command::Ctl { socket, command } => run_ctl(&socket, command),
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

fn run_emulate(args: EmulateArgs) -> Result<(), String> {
    let EmulateArgs {
        topology,
        duration,
        json,
        pcap,
        chart: chart_path,
        seed,
        control,
        taps,
    } = args;
    let topology = load_topology(topology, seed)?;
    let options = Options {
        duration_ms: duration,
        seed,
        pcap_dir: pcap,
        sample_ms: 100,
    };
    let start = std::time::Instant::now();
    let mut emulator = Emulator::new(topology, options)?;
    for tap in &taps {
        let (node, interface) = tap
            .split_once('=')
            .ok_or_else(|| format!("--tap {tap}: expected NODE=IFNAME"))?;
        emulator.attach_tap(node, interface)?;
        eprintln!("iipnic: {node}'s host side is TUN interface {interface}");
    }
    let live = !json && std::io::stdout().is_terminal();
    let mut last_second = 0;
    let mut show = |e: &Emulator| {
        if live && e.now_ms() / 1000 != last_second {
            last_second = e.now_ms() / 1000;
            print!("\r{}", e.status_line());
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    };
    match (&control, taps.is_empty()) {
        (Some(socket), _) => {
            let jobs = control::serve(socket)?;
            eprintln!("iipnic: control socket {}", socket.display());
            emulator.run_live(&jobs, duration, &mut show);
            let _ = std::fs::remove_file(socket);
        }
        (None, false) => {
            // TAP without a control socket: paced, with nobody to ask for changes.
            let (_keep, jobs) = std::sync::mpsc::channel();
            emulator.run_live(&jobs, duration, &mut show);
        }
        (None, true) => emulator.run(&mut show),
    }
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

fn run_ctl(socket: &std::path::Path, command: CtlCommand) -> Result<(), String> {
    let pair = |a: String, b: String| [a, b];
    let request = match command {
        CtlCommand::Counters { node } => Request::Counters { node },
        CtlCommand::Status => Request::Status,
        CtlCommand::Link { a, b, state } => match state.as_str() {
            "up" => Request::Event(EventAction::LinkUp { link: pair(a, b) }),
            "down" => Request::Event(EventAction::LinkDown { link: pair(a, b) }),
            other => return Err(format!("link state must be `up` or `down`, not `{other}`")),
        },
        CtlCommand::Swap { node, slot, module } => {
            let slot = serde_json::from_value(serde_json::Value::String(slot.clone()))
                .map_err(|_| format!("slot must be `route` or `spd`, not `{slot}`"))?;
            Request::Event(EventAction::SwapModule { node, slot, module })
        }
        CtlCommand::Rekey { from, to } => Request::Event(EventAction::Rekey { from, to }),
        CtlCommand::RouteAdd { node, prefix, vifs } => {
            let prefix = prefix.parse().map_err(|e| format!("{prefix}: {e}"))?;
            let next_hops = vifs
                .iter()
                .enumerate()
                .map(|(i, &vif)| iipnic_firmware::fib::NextHop {
                    vif: iipnic_firmware::vif::VifId(vif),
                    metric: 10 * (i as u32 + 1),
                    weight: 1,
                })
                .collect();
            let route = iipnic_firmware::fib::Route {
                prefix,
                target: iipnic_firmware::fib::RouteTarget::Vif { next_hops },
            };
            Request::Control {
                node,
                op: iipnic_firmware::ControlOp::UpsertRoute(route),
            }
        }
        CtlCommand::RouteRemove { node, prefix } => {
            let prefix = prefix.parse().map_err(|e| format!("{prefix}: {e}"))?;
            Request::Control {
                node,
                op: iipnic_firmware::ControlOp::RemoveRoute { prefix },
            }
        }
        CtlCommand::Apply { node, op } => {
            let op = serde_json::from_str(&op).map_err(|e| format!("operation: {e}"))?;
            Request::Control { node, op }
        }
        CtlCommand::Stop => Request::Stop,
    };
    let response = control::request(socket, &request)?;
    match (response.ok, response.result, response.error) {
        (true, Some(serde_json::Value::String(text)), _) => {
            println!("{text}");
            Ok(())
        }
        (true, Some(value), _) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        (true, None, _) => Ok(()),
        (false, _, error) => Err(error.unwrap_or_else(|| "request failed".into())),
    }
}
