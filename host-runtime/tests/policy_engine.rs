//! The WebAssembly policy plane: example modules against the native engine, every kind of
//! bad module, hot swap under traffic, shadow mode and the board (Pulley) path.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use iipnic::config::Network;
use iipnic::policy;
use iipnic_firmware::fib::NextHop;
use iipnic_firmware::packet_buf::{HEADROOM, TAILROOM};
use iipnic_firmware::policy::wasm::{
    ConfigSource, FailMode, LoadError, SlotKind, SlotSettings, WasmPolicy, load_artifact,
};
use iipnic_firmware::policy::wasm_config::{ArtifactTarget, engine_config};
use iipnic_firmware::policy::{Candidate, NativePolicy, PolicyEngine, RouteQuery, SpdQuery};
use iipnic_firmware::sad::SaId;
use iipnic_firmware::spd::{Action, Direction, Selector, Spd, SpdEntry, SpdEntryId, TunnelKey};
use iipnic_firmware::vif::VifId;
use iipnic_firmware::wire::{ipv4, proto};
use iipnic_firmware::{Disposition, DropReason, Node, PacketBuf, Port};
use wasmtime::{Engine, Module};

const TWO_PATHS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/two-paths.toml");

fn engine() -> Engine {
    policy::host_engine().unwrap()
}

fn module(engine: &Engine, name: &str) -> Module {
    let path = policy::find_module(name)
        .unwrap_or_else(|e| panic!("{e}: `cargo xtask test` builds the modules first"));
    policy::compile(engine, &path).unwrap()
}

fn wat(engine: &Engine, text: &str) -> Module {
    Module::new(engine, text).unwrap()
}

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn entry(
    id: u32,
    direction: Direction,
    src: &str,
    dst: &str,
    protocol: Option<u8>,
    action: Action,
) -> SpdEntry {
    SpdEntry {
        id: SpdEntryId(id),
        direction,
        selector: Selector {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
        },
        action,
    }
}

/// The shared test table: overlapping prefixes, both families, protocol selectors, every action.
fn shared_table() -> Spd {
    let mut spd = Spd::default();
    let protect = |sa| Action::Protect { sa: Some(SaId(sa)) };
    for e in [
        entry(
            1,
            Direction::Outbound,
            "192.0.2.1/32",
            "192.0.2.2/32",
            Some(4),
            protect(1),
        ),
        entry(
            2,
            Direction::Outbound,
            "192.0.2.0/24",
            "192.0.2.128/25",
            None,
            Action::Bypass,
        ),
        entry(
            3,
            Direction::Outbound,
            "192.0.2.0/24",
            "192.0.2.0/24",
            Some(41),
            protect(2),
        ),
        entry(
            4,
            Direction::Outbound,
            "0.0.0.0/0",
            "198.51.100.0/24",
            None,
            Action::Discard,
        ),
        entry(
            5,
            Direction::Inbound,
            "192.0.2.2/32",
            "192.0.2.1/32",
            None,
            Action::Protect { sa: None },
        ),
        entry(
            6,
            Direction::Inbound,
            "192.0.2.0/25",
            "192.0.2.0/24",
            Some(41),
            Action::Bypass,
        ),
        entry(
            7,
            Direction::Outbound,
            "2001:db8::/32",
            "2001:db8:1::/48",
            None,
            protect(3),
        ),
        entry(
            8,
            Direction::Inbound,
            "2001:db8:1::/48",
            "2001:db8::/64",
            Some(41),
            Action::Protect { sa: None },
        ),
        entry(
            9,
            Direction::Outbound,
            "::/0",
            "::/0",
            Some(4),
            Action::Bypass,
        ),
    ] {
        spd.upsert(e, None).unwrap();
    }
    spd
}

fn random_query(rng: &mut Rng) -> SpdQuery {
    let v4 = |r: u64| {
        IpAddr::V4(Ipv4Addr::new(
            if r.is_multiple_of(5) { 198 } else { 192 },
            if r.is_multiple_of(5) { 51 } else { 0 },
            if r.is_multiple_of(5) { 100 } else { 2 },
            (r >> 8) as u8,
        ))
    };
    let v6 = |r: u64| {
        let segs = [0x2001, 0xdb8, (r % 3) as u16, 0, 0, 0, 0, (r >> 16) as u16];
        IpAddr::V6(segs.into())
    };
    let (a, b) = (rng.next(), rng.next());
    let (src, dst) = if rng.next().is_multiple_of(3) {
        (v6(a), v6(b))
    } else {
        (v4(a), v4(b))
    };
    SpdQuery {
        direction: if rng.next().is_multiple_of(2) {
            Direction::Outbound
        } else {
            Direction::Inbound
        },
        key: TunnelKey {
            src,
            dst,
            protocol: if rng.next().is_multiple_of(2) { 4 } else { 41 },
        },
        protected: rng.next().is_multiple_of(2),
        now_ms: 0,
    }
}

fn assert_matches_native(
    engine_under_test: &mut WasmPolicy,
    spd: &Spd,
    seed: u64,
    min_entries: usize,
) {
    let mut rng = Rng(seed);
    let mut kinds = std::collections::HashSet::new();
    for _ in 0..3000 {
        let q = random_query(&mut rng);
        let native = NativePolicy.spd_decide(spd, &q);
        let wasm = engine_under_test.spd_decide(spd, &q);
        assert_eq!(
            (wasm.action, wasm.entry),
            (native.action, native.entry),
            "{q:?}"
        );
        kinds.insert(native.entry);
    }
    assert!(
        kinds.len() >= min_entries,
        "the queries exercised only {} entries",
        kinds.len()
    );
}

#[test]
fn spd_rules_reproduces_the_native_engine_exactly() {
    let engine = engine();
    let mut spd = shared_table();
    let mut wasm = WasmPolicy::new(engine.clone()).unwrap();
    wasm.load(
        SlotKind::Spd,
        module(&engine, "spd_rules"),
        ConfigSource::NodeSpd,
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    assert_matches_native(&mut wasm, &spd, 7, 8);
    // A control-plane change to the SPD reaches the module before its next answer.
    spd.upsert(
        entry(
            10,
            Direction::Outbound,
            "0.0.0.0/0",
            "0.0.0.0/0",
            None,
            Action::Bypass,
        ),
        Some(0),
    )
    .unwrap();
    // Entry 10 now takes every outbound query; the inbound entries still decide.
    assert_matches_native(&mut wasm, &spd, 8, 4);
    let c = wasm.counters(SlotKind::Spd);
    assert_eq!(c.reconfigurations, 1);
    assert_eq!((c.traps(), c.bad_outputs, c.failure_decisions), (0, 0, 0));
    assert!(c.fuel_used > 0);
}

#[test]
fn pulley_artifacts_from_the_precompiler_decide_the_same() {
    // The board path: precompile for pulley64, deserialize into a runtime-only engine.
    let path = policy::find_module("spd_rules").unwrap();
    let artifact =
        policy::precompile(&std::fs::read(path).unwrap(), ArtifactTarget::Pulley64).unwrap();
    let pulley = Engine::new(&engine_config(ArtifactTarget::Pulley64).unwrap()).unwrap();
    // SAFETY: the artifact comes from our own precompiler, for this configuration.
    let module = unsafe { load_artifact(&pulley, &artifact) }.unwrap();
    let spd = shared_table();
    let mut wasm = WasmPolicy::new(pulley.clone()).unwrap();
    wasm.load(
        SlotKind::Spd,
        module,
        ConfigSource::NodeSpd,
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    assert_matches_native(&mut wasm, &spd, 9, 8);
    // Garbage is refused with an error, not undefined behaviour.
    let garbage = unsafe { load_artifact(&pulley, b"\0asm\x01\0\0\0 not an artifact") };
    assert!(matches!(garbage, Err(LoadError::Invalid(_))));
}

fn route_query(candidates: &[Candidate], flow_hash: u32) -> RouteQuery<'_> {
    RouteQuery {
        src: "10.1.0.1".parse().unwrap(),
        dst: "10.2.0.1".parse().unwrap(),
        protocol: proto::UDP,
        flow_hash,
        candidates,
        now_ms: 0,
    }
}

fn candidates(up: &[bool]) -> Vec<Candidate> {
    up.iter()
        .enumerate()
        .map(|(i, &up)| Candidate {
            next_hop: NextHop {
                vif: VifId(i as u16 + 1),
                metric: 10,
                weight: 1,
            },
            up,
        })
        .collect()
}

#[test]
fn the_hand_written_wat_module_agrees_with_the_rust_one() {
    let engine = engine();
    let mut rust = WasmPolicy::new(engine.clone()).unwrap();
    let mut text = WasmPolicy::new(engine.clone()).unwrap();
    let spd = Spd::default();
    let blob = || ConfigSource::Blob(Vec::new());
    rust.load(
        SlotKind::Route,
        module(&engine, "route_lpm_first"),
        blob(),
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    text.load(
        SlotKind::Route,
        module(&engine, "route_first_wat"),
        blob(),
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    let mut rng = Rng(3);
    for _ in 0..500 {
        let n = (rng.next() % 9) as usize;
        let up: Vec<bool> = (0..n).map(|_| !rng.next().is_multiple_of(3)).collect();
        let c = candidates(&up);
        let q = route_query(&c, rng.next() as u32);
        let expected = NativePolicy.route_select(&q).choice;
        assert_eq!(rust.route_select(&q).choice, expected, "{up:?}");
        assert_eq!(text.route_select(&q).choice, expected, "{up:?}");
    }
}

#[test]
fn ecmp_failover_and_allowlist_through_the_engine() {
    let engine = engine();
    let spd = Spd::default();
    let mut ecmp = WasmPolicy::new(engine.clone()).unwrap();
    ecmp.load(
        SlotKind::Route,
        module(&engine, "route_ecmp"),
        ConfigSource::Blob(vec![]),
        SlotSettings::default(),
        &spd,
        0,
    )
    .unwrap();
    let c = candidates(&[true, true, true]);
    let mut used = [0; 3];
    for h in 0..300u32 {
        let choice = ecmp
            .route_select(&route_query(&c, h.wrapping_mul(0x9e37_79b9)))
            .choice
            .unwrap();
        used[choice] += 1;
    }
    assert!(
        used.iter().all(|&n| n > 60),
        "flows spread over all paths: {used:?}"
    );

    let mut failover = WasmPolicy::new(engine.clone()).unwrap();
    let hold_down = 500u32.to_le_bytes().to_vec();
    failover
        .load(
            SlotKind::Route,
            module(&engine, "route_failover"),
            ConfigSource::Blob(hold_down),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
    let at = |failover: &mut WasmPolicy, up: &[bool], now_ms| {
        let c = candidates(up);
        failover
            .route_select(&RouteQuery {
                now_ms,
                ..route_query(&c, 1)
            })
            .choice
    };
    assert_eq!(at(&mut failover, &[true, true], 0), Some(0));
    assert_eq!(at(&mut failover, &[false, true], 100), Some(1));
    // The clock import drives the hold-down inside the sandbox.
    assert_eq!(at(&mut failover, &[true, true], 200), Some(1));
    assert_eq!(at(&mut failover, &[true, true], 700), Some(0));

    let mut allow = WasmPolicy::new(engine.clone()).unwrap();
    let mut cfg = 1u32.to_le_bytes().to_vec();
    let mut peer = [0u8; 24];
    peer[0] = 4;
    peer[1] = 32;
    peer[4..8].copy_from_slice(&[192, 0, 2, 2]);
    peer[20..24].copy_from_slice(&5u32.to_le_bytes());
    cfg.extend_from_slice(&peer);
    allow
        .load(
            SlotKind::Spd,
            module(&engine, "spd_tenant_allowlist"),
            ConfigSource::Blob(cfg),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
    let q = |dst: &str| SpdQuery {
        direction: Direction::Outbound,
        key: TunnelKey {
            src: "192.0.2.1".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 4,
        },
        protected: false,
        now_ms: 0,
    };
    assert_eq!(
        allow.spd_decide(&spd, &q("192.0.2.2")).action,
        Action::Protect { sa: Some(SaId(5)) }
    );
    assert_eq!(
        allow.spd_decide(&spd, &q("192.0.2.3")).action,
        Action::Discard
    );
    // An allow-list that allows nobody fails its self-test and is never swapped in.
    let err = allow.load(
        SlotKind::Spd,
        module(&engine, "spd_tenant_allowlist"),
        ConfigSource::Blob(0u32.to_le_bytes().to_vec()),
        SlotSettings::default(),
        &spd,
        0,
    );
    assert_eq!(err, Err(LoadError::SelfTestFailed(4)));
    assert_eq!(
        allow.spd_decide(&spd, &q("192.0.2.2")).action,
        Action::Protect { sa: Some(SaId(5)) }
    );
}

/// A minimal ABI v1 route module around `body`, which must leave an i32 status.
fn route_wat(version: &str, extra: &str, body: &str) -> String {
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (func (export "iipnic_abi_version") (result i32) (i32.const {version}))
  (func (export "iipnic_query_buffer") (result i32) (i32.const 1024))
  (func (export "route_select") (result i32) {body}))"#
    )
}

const ANSWER_ZERO: &str = "(i32.store8 (i32.const 1152) (i32.const 0)) (i32.store8 (i32.const 1153) (i32.const 1)) (i32.const 0)";

fn load_route(text: &str, settings: SlotSettings) -> (WasmPolicy, Result<(), LoadError>) {
    let engine = engine();
    let mut policy = WasmPolicy::new(engine.clone()).unwrap();
    let module = match Module::new(&engine, text) {
        Ok(m) => m,
        Err(e) => return (policy, Err(LoadError::Invalid(e.to_string()))),
    };
    let result = policy.load(
        SlotKind::Route,
        module,
        ConfigSource::Blob(vec![]),
        settings,
        &Spd::default(),
        0,
    );
    (policy, result)
}

#[test]
fn a_good_minimal_wat_module_is_accepted() {
    let (mut p, r) = load_route(
        &route_wat("0x10000", "", ANSWER_ZERO),
        SlotSettings::default(),
    );
    r.unwrap();
    assert_eq!(
        p.route_select(&route_query(&candidates(&[true]), 0)).choice,
        Some(0)
    );
}

#[test]
fn refused_at_load_wrong_version_missing_export_extra_import_malformed() {
    let (_, r) = load_route(
        &route_wat("0x20000", "", ANSWER_ZERO),
        SlotSettings::default(),
    );
    assert_eq!(r, Err(LoadError::UnsupportedAbi { major: 2, minor: 0 }));
    let (_, r) = load_route(
        &route_wat("0x10005", "", ANSWER_ZERO),
        SlotSettings::default(),
    );
    assert_eq!(r, Err(LoadError::UnsupportedAbi { major: 1, minor: 5 }));
    let (_, r) = load_route(
        &route_wat("0x10000", "", ANSWER_ZERO).replace("\"route_select\"", "\"route_choose\""),
        SlotSettings::default(),
    );
    assert_eq!(r, Err(LoadError::MissingExport("route_select")));
    let wasi = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    let (_, r) = load_route(
        &route_wat("0x10000", wasi, ANSWER_ZERO),
        SlotSettings::default(),
    );
    assert_eq!(
        r,
        Err(LoadError::ForbiddenImport {
            module: "wasi_snapshot_preview1".into(),
            name: "fd_write".into()
        })
    );
    let sneaky = r#"(import "iipnic" "log" (func (param i64)))"#;
    let (_, r) = load_route(
        &route_wat("0x10000", sneaky, ANSWER_ZERO),
        SlotSettings::default(),
    );
    assert!(
        matches!(r, Err(LoadError::ForbiddenImport { .. })),
        "right name, wrong signature: {r:?}"
    );
    let (_, r) = load_route("(module (this is not wasm", SlotSettings::default());
    assert!(matches!(r, Err(LoadError::Invalid(_))));
    let big = route_wat("0x10000", "", ANSWER_ZERO).replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 100)",
    );
    let (_, r) = load_route(&big, SlotSettings::default());
    assert!(
        matches!(r, Err(LoadError::Instantiate(_))),
        "6.4 MB initial memory over a 256 KiB cap: {r:?}"
    );
    for err in [
        LoadError::UnsupportedAbi { major: 2, minor: 0 },
        LoadError::MissingExport("route_select"),
        LoadError::ForbiddenImport {
            module: "wasi".into(),
            name: "x".into(),
        },
    ] {
        assert!(!err.to_string().is_empty());
    }
}

fn fast_backoff() -> SlotSettings {
    SlotSettings {
        backoff_initial_ms: 100,
        backoff_max_ms: 400,
        ..SlotSettings::default()
    }
}

#[test]
fn infinite_loop_runs_out_of_fuel_fails_closed_and_backs_off() {
    let (mut p, r) = load_route(
        &route_wat("0x10000", "", "(loop $l (br $l)) (i32.const 0)"),
        fast_backoff(),
    );
    r.unwrap();
    let c = candidates(&[true]);
    let q = |now_ms| RouteQuery {
        now_ms,
        ..route_query(&c, 0)
    };
    let d = p.route_select(&q(0));
    assert_eq!(
        (d.choice, d.cacheable),
        (None, false),
        "fail-closed, never cached"
    );
    let counters = p.counters(SlotKind::Route);
    assert_eq!(
        (
            counters.trap_out_of_fuel,
            counters.calls,
            counters.failure_decisions
        ),
        (1, 1, 1)
    );
    assert_eq!(counters.fuel_used, SlotSettings::default().fuel_per_call);
    // Inside the backoff window the module is not called at all.
    p.route_select(&q(50));
    assert_eq!(p.counters(SlotKind::Route).calls, 1);
    // After it, the module is re-instantiated and tried again (and traps again).
    p.route_select(&q(150));
    let counters = p.counters(SlotKind::Route);
    assert_eq!(
        (counters.reloads, counters.calls, counters.trap_out_of_fuel),
        (1, 2, 2)
    );
    // The wait doubles (200 ms now): nothing at 300, a retry at 360.
    p.route_select(&q(300));
    assert_eq!(p.counters(SlotKind::Route).calls, 2);
    p.route_select(&q(360));
    assert_eq!(p.counters(SlotKind::Route).calls, 3);
}

#[test]
fn fail_open_uses_the_native_choice() {
    let settings = SlotSettings {
        fail: FailMode::Open,
        ..fast_backoff()
    };
    let (mut p, r) = load_route(&route_wat("0x10000", "", "(unreachable)"), settings);
    r.unwrap();
    let c = candidates(&[false, true]);
    assert_eq!(p.route_select(&route_query(&c, 0)).choice, Some(1));
    assert_eq!(p.counters(SlotKind::Route).trap_unreachable, 1);
}

#[test]
fn out_of_bounds_access_and_memory_growth_past_the_cap_trap_harmlessly() {
    let oob = "(drop (i32.load (i32.const 0xfffffff0))) (i32.const 0)";
    let (mut p, r) = load_route(&route_wat("0x10000", "", oob), fast_backoff());
    r.unwrap();
    assert_eq!(
        p.route_select(&route_query(&candidates(&[true]), 0)).choice,
        None
    );
    assert_eq!(p.counters(SlotKind::Route).trap_memory_out_of_bounds, 1);

    // Grow by 64 pages (4 MiB) past the 256 KiB cap: the grow fails (-1) and the module,
    // like a Rust allocator would, gives up with a trap.
    let grow = "(if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then (unreachable))) (i32.const 0)";
    let (mut p, r) = load_route(&route_wat("0x10000", "", grow), fast_backoff());
    r.unwrap();
    assert_eq!(
        p.route_select(&route_query(&candidates(&[true]), 0)).choice,
        None
    );
    assert_eq!(p.counters(SlotKind::Route).trap_unreachable, 1);
}

#[test]
fn bad_outputs_are_counted_and_fail_closed() {
    // Status 0 but an index past the candidates; then a non-zero status.
    let past_end = "(i32.store8 (i32.const 1152) (i32.const 7)) (i32.store8 (i32.const 1153) (i32.const 1)) (i32.const 0)";
    let (mut p, r) = load_route(&route_wat("0x10000", "", past_end), fast_backoff());
    r.unwrap();
    assert_eq!(
        p.route_select(&route_query(&candidates(&[true, true]), 0))
            .choice,
        None
    );
    let (mut q, r) = load_route(&route_wat("0x10000", "", "(i32.const 9)"), fast_backoff());
    r.unwrap();
    assert_eq!(
        q.route_select(&route_query(&candidates(&[true]), 0)).choice,
        None
    );
    assert_eq!(
        (
            p.counters(SlotKind::Route).bad_outputs,
            q.counters(SlotKind::Route).bad_outputs
        ),
        (1, 1)
    );
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 100];
    ipv4::Repr {
        src: src.into(),
        dst: dst.into(),
        protocol: proto::UDP,
        payload_len: 80,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p
}

/// Sends `packet` from A's host; returns what B delivered to its host, if anything.
fn through(
    a: &mut Node<WasmPolicy>,
    b: &mut Node<WasmPolicy>,
    packet: &[u8],
    now_ms: u64,
) -> (Disposition, Option<Vec<u8>>) {
    let mut buf = vec![0u8; HEADROOM + 256 + TAILROOM];
    let mut pkt = PacketBuf::copy_from(&mut buf, packet).unwrap();
    let mut wire = None;
    let d = a.from_host(&mut pkt, now_ms, &mut |_: Port, p: &[u8]| {
        wire = Some(p.to_vec())
    });
    let Some(wire) = wire else { return (d, None) };
    let mut buf = vec![0u8; HEADROOM + 256 + TAILROOM];
    let mut pkt = PacketBuf::copy_from(&mut buf, &wire).unwrap();
    let mut delivered = None;
    b.from_underlay(&mut pkt, now_ms, &mut |port: Port, p: &[u8]| {
        if port == Port::Host {
            delivered = Some(p.to_vec());
        }
    });
    (d, delivered)
}

fn wasm_nodes() -> Vec<Node<WasmPolicy>> {
    let engine = engine();
    Network::load(Path::new(TWO_PATHS))
        .unwrap()
        .build_nodes_with(0, |_| {
            WasmPolicy::new(engine.clone()).map_err(|e| e.to_string())
        })
        .unwrap()
}

#[test]
fn hot_swap_under_traffic_loses_nothing_and_caches_spare_the_module() {
    let mut nodes = wasm_nodes();
    let (a, rest) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    let engine = a.policy_mut().engine().clone();
    let spd = a.spd().clone();
    a.policy_mut()
        .load(
            SlotKind::Route,
            module(&engine, "route_lpm_first"),
            ConfigSource::Blob(vec![]),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
    let flows: Vec<Vec<u8>> = (0..64)
        .map(|i| udp([10, 1, 0, 1], [10, 2, 0, 9], 1000 + i))
        .collect();
    let mut sent = 0;
    let mut delivered = 0;
    let mut paths_before = std::collections::HashSet::new();
    for round in 0..20u64 {
        if round == 10 {
            // Swap route selection to ECMP mid-stream; a broken candidate is refused first
            // and changes nothing.
            let broken = wat(&engine, &route_wat("0x20000", "", ANSWER_ZERO));
            assert!(
                a.policy_mut()
                    .load(
                        SlotKind::Route,
                        broken,
                        ConfigSource::Blob(vec![]),
                        SlotSettings::default(),
                        &spd,
                        round
                    )
                    .is_err()
            );
            a.policy_mut()
                .load(
                    SlotKind::Route,
                    module(&engine, "route_ecmp"),
                    ConfigSource::Blob(vec![]),
                    SlotSettings::default(),
                    &spd,
                    round,
                )
                .unwrap();
        }
        for f in &flows {
            sent += 1;
            let (d, out) = through(a, b, f, round);
            assert_eq!(d, Disposition::Sent(Port::Underlay));
            if round < 10 {
                paths_before.insert(
                    a.vifs()
                        .iter()
                        .filter(|v| v.counters.tx_packets > 0)
                        .count(),
                );
            }
            if out.as_deref() == Some(&f[..]) {
                delivered += 1;
            }
        }
    }
    assert_eq!(delivered, sent, "no packet lost across the swap");
    // lpm-first used one path; ECMP spreads the 64 flows over both after the swap.
    let vif_tx: Vec<u64> = a.vifs().iter().map(|v| v.counters.tx_packets).collect();
    assert!(vif_tx.iter().all(|&n| n > 100), "{vif_tx:?}");
    assert_eq!(paths_before, [1].into());
    // The module is asked once per flow and policy generation, not per packet.
    let c = a.policy_mut().counters(SlotKind::Route);
    assert_eq!(c.calls, 128, "64 flows x 2 modules");
    assert_eq!(a.counters().route_cache_hits, 20 * 64 - 128);
    assert_eq!(c.swaps, 2);
}

#[test]
fn shadow_mode_reports_disagreements_before_commit() {
    let mut nodes = wasm_nodes();
    let (a, rest) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    let engine = a.policy_mut().engine().clone();
    let spd = a.spd().clone();
    let blob = || ConfigSource::Blob(vec![]);
    a.policy_mut()
        .load(
            SlotKind::Route,
            module(&engine, "route_lpm_first"),
            blob(),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
    a.policy_mut()
        .load_shadow(
            SlotKind::Route,
            module(&engine, "route_ecmp"),
            blob(),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
    for i in 0..32 {
        let (_, out) = through(a, b, &udp([10, 1, 0, 1], [10, 2, 0, 9], 2000 + i), 0);
        assert!(out.is_some());
    }
    let policy = a.policy_mut();
    let c = policy.counters(SlotKind::Route);
    assert_eq!(c.shadow_calls, 32);
    assert!(
        c.shadow_mismatches > 5 && c.shadow_mismatches < 27,
        "ECMP moves about half the flows: {}",
        c.shadow_mismatches
    );
    assert!(!policy.shadow_mismatches(SlotKind::Route).is_empty());
    // Only the live module's answers were used: everything went over vif 1.
    assert_eq!(a.vifs().get(VifId(2)).unwrap().counters.tx_packets, 0);
    a.policy_mut().promote_shadow(SlotKind::Route).unwrap();
    for i in 0..32 {
        through(a, b, &udp([10, 1, 0, 1], [10, 2, 0, 9], 2000 + i), 1);
    }
    assert!(a.vifs().get(VifId(2)).unwrap().counters.tx_packets > 0);
}

#[test]
fn a_decision_naming_a_missing_sa_is_counted_and_the_datapath_goes_on() {
    let mut nodes = wasm_nodes();
    let (a, rest) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    let engine = a.policy_mut().engine().clone();
    // An SPD module that protects everything with SA 99, which does not exist.
    let protect_99 = r#"(module
      (memory (export "memory") 1)
      (func (export "iipnic_abi_version") (result i32) (i32.const 0x10000))
      (func (export "iipnic_query_buffer") (result i32) (i32.const 1024))
      (func (export "spd_decide") (result i32)
        (i32.store8 (i32.const 1152) (i32.const 2))
        (i32.store8 (i32.const 1153) (i32.const 3))
        (i32.store (i32.const 1156) (i32.const 99))
        (i32.const 0)))"#;
    let spd = a.spd().clone();
    a.policy_mut()
        .load(
            SlotKind::Spd,
            wat(&engine, protect_99),
            ConfigSource::Blob(vec![]),
            SlotSettings::default(),
            &spd,
            0,
        )
        .unwrap();
    let (d, _) = through(a, b, &udp([10, 1, 0, 1], [10, 2, 0, 9], 1), 0);
    assert_eq!(d, Disposition::Dropped(DropReason::PolicyUnknownSa));
    // The operator unloads it; the SPD table takes over again and traffic flows.
    a.policy_mut().unload(SlotKind::Spd);
    let packet = udp([10, 1, 0, 1], [10, 2, 0, 9], 1);
    assert_eq!(through(a, b, &packet, 1).1.as_deref(), Some(&packet[..]));
}

#[test]
fn a_module_that_traps_on_every_call_never_stops_the_node() {
    let mut nodes = wasm_nodes();
    let (a, rest) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    let engine = a.policy_mut().engine().clone();
    let spd = a.spd().clone();
    let always_traps = wat(&engine, &route_wat("0x10000", "", "(unreachable)"));
    a.policy_mut()
        .load(
            SlotKind::Route,
            always_traps,
            ConfigSource::Blob(vec![]),
            fast_backoff(),
            &spd,
            0,
        )
        .unwrap();
    for t in 0..50u64 {
        let (d, _) = through(a, b, &udp([10, 1, 0, 1], [10, 2, 0, 9], t as u16), t * 20);
        assert_eq!(
            d,
            Disposition::Dropped(DropReason::NoNextHop),
            "fail-closed"
        );
    }
    let c = a.policy_mut().counters(SlotKind::Route);
    assert!(
        c.trap_unreachable >= 4 && c.trap_unreachable < 50,
        "backoff limits the calls: {}",
        c.trap_unreachable
    );
    assert_eq!(c.failure_decisions, 50);
    assert!(c.reloads >= 3);
    assert_eq!(a.counters().drops(DropReason::NoNextHop), 50);
    // Traffic that needs no route selection still flows: B -> A uses B's native engine.
    let mut buf = vec![0u8; HEADROOM + 256 + TAILROOM];
    let packet = udp([10, 2, 0, 9], [10, 1, 0, 1], 5);
    let mut pkt = PacketBuf::copy_from(&mut buf, &packet).unwrap();
    assert_eq!(
        b.from_host(&mut pkt, 0, &mut |_: Port, _: &[u8]| {}),
        Disposition::Sent(Port::Underlay)
    );
    // Swapping in a good module restores A's forwarding at once.
    a.policy_mut()
        .load(
            SlotKind::Route,
            module(&engine, "route_lpm_first"),
            ConfigSource::Blob(vec![]),
            SlotSettings::default(),
            &spd,
            1000,
        )
        .unwrap();
    let packet = udp([10, 1, 0, 1], [10, 2, 0, 9], 77);
    assert_eq!(through(a, b, &packet, 1000).1.as_deref(), Some(&packet[..]));
}

/// Every bad module, loaded into a running node: refused at load, or failing closed at
/// run time; either way nothing panics, the reason is counted, and once a good module is
/// back the node forwards again.
#[test]
fn every_bad_module_leaves_the_datapath_forwarding() {
    let loop_forever = route_wat("0x10000", "", "(loop $l (br $l)) (i32.const 0)");
    let oob = route_wat(
        "0x10000",
        "",
        "(drop (i32.load (i32.const 0xfffffff0))) (i32.const 0)",
    );
    let grow = route_wat(
        "0x10000",
        "",
        "(if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then (unreachable))) (i32.const 0)",
    );
    let big_memory = route_wat("0x10000", "", ANSWER_ZERO).replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 100)",
    );
    let wrong_version = route_wat("0x20000", "", ANSWER_ZERO);
    let missing_export =
        route_wat("0x10000", "", ANSWER_ZERO).replace("\"route_select\"", "\"route_choose\"");
    let extra_import = route_wat(
        "0x10000",
        r#"(import "env" "socket" (func (result i32)))"#,
        ANSWER_ZERO,
    );
    let traps_always = route_wat("0x10000", "", "(unreachable)");
    let bad_index = route_wat(
        "0x10000",
        "",
        "(i32.store8 (i32.const 1152) (i32.const 9)) (i32.const 0)",
    );
    let cases: [(&str, &[u8]); 10] = [
        ("infinite loop", loop_forever.as_bytes()),
        ("out-of-bounds access", oob.as_bytes()),
        ("memory growth past the cap", grow.as_bytes()),
        ("initial memory past the cap", big_memory.as_bytes()),
        ("wrong ABI version", wrong_version.as_bytes()),
        ("missing export", missing_export.as_bytes()),
        ("extra import", extra_import.as_bytes()),
        ("malformed bytes", b"\0asm\x01\0\0\0\x01\xff\xff"),
        ("traps on every call", traps_always.as_bytes()),
        ("index past the candidates", bad_index.as_bytes()),
    ];
    for (what, bytes) in cases {
        let mut nodes = wasm_nodes();
        let (a, rest) = nodes.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut rest[0]);
        let engine = a.policy_mut().engine().clone();
        let spd = a.spd().clone();
        let packet = udp([10, 1, 0, 1], [10, 2, 0, 9], 4242);
        let loaded = Module::new(&engine, bytes)
            .map_err(|e| LoadError::Invalid(e.to_string()))
            .and_then(|m| {
                a.policy_mut().load(
                    SlotKind::Route,
                    m,
                    ConfigSource::Blob(vec![]),
                    fast_backoff(),
                    &spd,
                    0,
                )
            });
        match loaded {
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{what}");
                // Refused: the node never stopped using its previous (native) choice.
                assert_eq!(
                    through(a, b, &packet, 0).1.as_deref(),
                    Some(&packet[..]),
                    "{what}"
                );
            }
            Ok(()) => {
                // Accepted but broken: fail-closed and counted.
                assert_eq!(
                    through(a, b, &packet, 0).0,
                    Disposition::Dropped(DropReason::NoNextHop),
                    "{what}"
                );
                let c = a.policy_mut().counters(SlotKind::Route);
                assert_eq!(c.failure_decisions, 1, "{what}");
                assert_eq!(c.traps() + c.bad_outputs, 1, "{what}");
            }
        }
        a.policy_mut()
            .load(
                SlotKind::Route,
                module(&engine, "route_lpm_first"),
                ConfigSource::Blob(vec![]),
                SlotSettings::default(),
                &spd,
                1,
            )
            .unwrap();
        assert_eq!(
            through(a, b, &packet, 1).1.as_deref(),
            Some(&packet[..]),
            "{what}: forwarding again"
        );
    }
}
