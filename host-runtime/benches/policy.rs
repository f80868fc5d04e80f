//! The policy plane's costs, measured against the native engine in the same run:
//!
//! - decisions per second on a cache miss: native, WebAssembly compiled by cranelift
//!   (host), and Pulley bytecode (what boards without a native backend run);
//! - a cache hit: a whole outbound packet with a module loaded vs. with the native engine
//!   (a hit must not call into wasm, so the two should cost the same);
//! - the hot-swap pause: the longest a packet waits while modules are swapped under load.
//!
//! Run: `cargo xtask policies && cargo bench -p iipnic --bench policy`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use iipnic::config::Network;
use iipnic::policy;
use iipnic_firmware::fib::NextHop;
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::policy::wasm::{
    ConfigSource, SlotKind, SlotSettings, WasmPolicy, load_artifact,
};
use iipnic_firmware::policy::wasm_config::{ArtifactTarget, engine_config};
use iipnic_firmware::policy::{Candidate, NativePolicy, PolicyEngine, RouteQuery, SpdQuery};
use iipnic_firmware::spd::{Direction, Spd, TunnelKey};
use iipnic_firmware::vif::VifId;
use iipnic_firmware::wire::{ipv4, proto};
use iipnic_firmware::{Node, PacketBuf, Port};
use wasmtime::{Engine, Module};

const TWO_PATHS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/two-paths.toml");

fn module_for(engine: &Engine, target: ArtifactTarget, name: &str) -> Module {
    let path = policy::find_module(name).expect("run `cargo xtask policies` first");
    match target {
        ArtifactTarget::Host => policy::compile(engine, &path).unwrap(),
        other => {
            let artifact = policy::precompile(&std::fs::read(path).unwrap(), other).unwrap();
            // SAFETY: produced just now by our precompiler for this configuration.
            unsafe { load_artifact(engine, &artifact) }.unwrap()
        }
    }
}

fn engine_for(target: ArtifactTarget) -> Engine {
    Engine::new(&engine_config(target).unwrap()).unwrap()
}

fn spd_table() -> Spd {
    let text = r#"
        [[e]]
        id = 1
        direction = "outbound"
        src = "192.0.2.1/32"
        dst = "192.0.2.2/32"
        protocol = 4
        action = "protect"
        sa = 1
        [[e]]
        id = 2
        direction = "outbound"
        src = "192.0.2.0/24"
        dst = "192.0.2.0/24"
        action = "bypass"
        [[e]]
        id = 3
        direction = "inbound"
        src = "192.0.2.0/24"
        dst = "192.0.2.0/24"
        action = "protect"
    "#;
    #[derive(serde::Deserialize)]
    struct T {
        e: Vec<iipnic_firmware::spd::SpdEntry>,
    }
    let t: T = toml::from_str(text).unwrap();
    let mut spd = Spd::default();
    for e in t.e {
        spd.upsert(e, None).unwrap();
    }
    spd
}

fn spd_queries() -> Vec<SpdQuery> {
    (0..64u8)
        .map(|i| SpdQuery {
            direction: if i % 2 == 0 {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            key: TunnelKey {
                src: format!("192.0.2.{}", i % 4).parse().unwrap(),
                dst: format!("192.0.2.{i}").parse().unwrap(),
                protocol: if i % 3 == 0 { 41 } else { 4 },
            },
            protected: true,
            now_ms: 0,
        })
        .collect()
}

fn bench_decisions(c: &mut Criterion) {
    let spd = spd_table();
    let queries = spd_queries();
    let candidates: Vec<Candidate> = (1..=4)
        .map(|v| Candidate {
            next_hop: NextHop {
                vif: VifId(v),
                metric: 10,
                weight: 1,
            },
            up: v != 1,
        })
        .collect();
    let mut group = c.benchmark_group("spd_decision_on_miss");
    group.bench_function("native", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(NativePolicy.spd_decide(&spd, &queries[i]))
        })
    });
    for (name, target) in [
        ("wasm_cranelift", ArtifactTarget::Host),
        ("wasm_pulley64", ArtifactTarget::Pulley64),
    ] {
        let engine = engine_for(target);
        let mut wasm = WasmPolicy::new(engine.clone()).unwrap();
        wasm.load(
            SlotKind::Spd,
            module_for(&engine, target, "spd_rules"),
            ConfigSource::NodeSpd,
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(wasm.spd_decide(&spd, &queries[i]))
            })
        });
        assert_eq!(wasm.counters(SlotKind::Spd).traps(), 0);
    }
    group.finish();

    let mut group = c.benchmark_group("route_selection_on_miss");
    let query = |flow_hash| RouteQuery {
        src: "10.1.0.1".parse().unwrap(),
        dst: "10.2.0.1".parse().unwrap(),
        protocol: proto::UDP,
        flow_hash,
        candidates: &candidates,
        now_ms: 0,
    };
    group.bench_function("native", |b| {
        let mut h = 0u32;
        b.iter(|| {
            h = h.wrapping_add(1);
            black_box(NativePolicy.route_select(&query(h)))
        })
    });
    for (name, target) in [
        ("wasm_cranelift", ArtifactTarget::Host),
        ("wasm_pulley64", ArtifactTarget::Pulley64),
    ] {
        let engine = engine_for(target);
        let mut wasm = WasmPolicy::new(engine.clone()).unwrap();
        wasm.load(
            SlotKind::Route,
            module_for(&engine, target, "route_ecmp"),
            ConfigSource::Blob(vec![]),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
        group.bench_function(BenchmarkId::new(name, "route_ecmp"), |b| {
            let mut h = 0u32;
            b.iter(|| {
                h = h.wrapping_add(1);
                black_box(wasm.route_select(&query(h)))
            })
        });
    }
    group.finish();
}

fn udp(sport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 512];
    ipv4::Repr {
        src: [10, 1, 0, 1].into(),
        dst: [10, 2, 0, 9].into(),
        protocol: proto::UDP,
        payload_len: 492,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p
}

fn node_a<P: PolicyEngine>(make: impl FnMut(usize) -> Result<P, String>) -> Node<P> {
    Network::load(Path::new(TWO_PATHS))
        .unwrap()
        .build_nodes_with(0, make)
        .unwrap()
        .remove(0)
}

fn send<P: PolicyEngine>(node: &mut Node<P>, buf: &mut [u8], packet: &[u8]) {
    let mut pkt = PacketBuf::copy_from(buf, packet).unwrap();
    node.from_host(&mut pkt, 0, &mut |_: Port, p: &[u8]| {
        black_box(p);
    });
}

fn loaded_node(engine: &Engine) -> Node<WasmPolicy> {
    let mut node = node_a(|_| WasmPolicy::new(engine.clone()).map_err(|e| e.to_string()));
    let spd = node.spd().clone();
    let p = node.policy_mut();
    p.load(
        SlotKind::Spd,
        module_for(engine, ArtifactTarget::Host, "spd_rules"),
        ConfigSource::NodeSpd,
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    p.load(
        SlotKind::Route,
        module_for(engine, ArtifactTarget::Host, "route_ecmp"),
        ConfigSource::Blob(vec![]),
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    node
}

fn bench_cache_hit(c: &mut Criterion) {
    let packets: Vec<Vec<u8>> = (0..16).map(|i| udp(1000 + i)).collect();
    let mut buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
    let mut group = c.benchmark_group("outbound_packet_warm_caches");
    let mut native = node_a(|_| Ok(NativePolicy));
    group.bench_function("native_engine", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % packets.len();
            send(&mut native, &mut buf, &packets[i])
        })
    });
    let engine = engine_for(ArtifactTarget::Host);
    let mut wasm = loaded_node(&engine);
    for p in &packets {
        send(&mut wasm, &mut buf, p);
    }
    let calls_before = wasm.policy_mut().counters(SlotKind::Route).calls
        + wasm.policy_mut().counters(SlotKind::Spd).calls;
    group.bench_function("wasm_modules_loaded", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % packets.len();
            send(&mut wasm, &mut buf, &packets[i])
        })
    });
    group.finish();
    let calls_after = wasm.policy_mut().counters(SlotKind::Route).calls
        + wasm.policy_mut().counters(SlotKind::Spd).calls;
    println!(
        "wasm calls during the cache-hit benchmark: {} (a hit must not call into wasm)",
        calls_after - calls_before
    );
}

/// Per-packet latency while a control thread prepares modules and the packet loop installs
/// them every 2000 packets, against the same loop without swaps.
fn swap_pause() {
    let engine = engine_for(ArtifactTarget::Host);
    let mut node = loaded_node(&engine);
    let spd = node.spd().clone();
    let packets: Vec<Vec<u8>> = (0..64).map(|i| udp(3000 + i)).collect();
    let mut buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
    let names = ["route_lpm_first", "route_ecmp"];
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (retire_tx, retire_rx) =
        std::sync::mpsc::channel::<iipnic_firmware::policy::wasm::Prepared>();
    let preparer = {
        let engine = engine.clone();
        let modules: Vec<Module> = names
            .iter()
            .map(|n| module_for(&engine, ArtifactTarget::Host, n))
            .collect();
        std::thread::spawn(move || {
            for i in 0..20 {
                let prepared = WasmPolicy::prepare(
                    &engine,
                    SlotKind::Route,
                    modules[i % 2].clone(),
                    ConfigSource::Blob(vec![]),
                    SlotSettings::default(),
                    &spd,
                    0,
                )
                .unwrap();
                if tx.send(prepared).is_err() {
                    return;
                }
                // Replaced modules come back here to be torn down off the packet path.
                while let Ok(old) = retire_rx.try_recv() {
                    drop(old);
                }
            }
        })
    };
    let mut run = |node: &mut Node<WasmPolicy>, swaps: bool| {
        let mut times = Vec::with_capacity(40_000);
        let mut install_max = Duration::ZERO;
        let mut installs = 0;
        for n in 0..40_000usize {
            let start = Instant::now();
            if swaps
                && n % 2000 == 0
                && let Ok(prepared) = rx.try_recv()
            {
                let t = Instant::now();
                let old = node.policy_mut().install(prepared);
                install_max = install_max.max(t.elapsed());
                installs += 1;
                if let Some(old) = old {
                    let _ = retire_tx.send(old);
                }
            }
            send(node, &mut buf, &packets[n % packets.len()]);
            times.push(start.elapsed());
        }
        times.sort();
        (
            times[times.len() / 2],
            times[times.len() * 999 / 1000],
            times[times.len() - 1],
            install_max,
            installs,
        )
    };
    let (p50, p999, max, _, _) = run(&mut node, false);
    let (sp50, sp999, smax, install, installs) = run(&mut node, true);
    drop(preparer);
    println!("\nhot swap under load (40 000 packets each, 512 B):");
    println!("  without swaps: p50 {p50:?}  p99.9 {p999:?}  max {max:?}");
    println!("  with swaps:    p50 {sp50:?}  p99.9 {sp999:?}  max {smax:?}  ({installs} swaps)");
    println!("  longest install() on the packet path: {install:?}");
    println!("  (the first packets of each flow after a swap pay one module call: the cache miss)");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_decisions(&mut c);
    bench_cache_hit(&mut c);
    c.final_summary();
    swap_pause();
}
