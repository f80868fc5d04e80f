//! The `iipnic` binary as a user runs it.

use std::path::Path;
use std::process::Command;

use iipnic::pcap;

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/linux-6.1/iiptran.pcap"
);
const NETWORK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/linux-peer.toml");

fn iipnic(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iipnic"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn replay_writes_the_eight_inner_icmp_packets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("inner.pcap");
    let result = iipnic(&[
        "replay",
        "--config",
        NETWORK,
        "--in",
        CAPTURE,
        "--out",
        out.to_str().unwrap(),
        "--direction",
        "inbound",
        "--json",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let records = pcap::read(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(records.len(), 8);
    for r in &records {
        assert_eq!(r.packet[0], 0x45);
        assert_eq!(r.packet[9], 1, "ICMP");
        assert_eq!(&r.packet[12..14], &[10, 99]);
    }
    let report: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(report["packets"], 8);
    assert_eq!(report["emitted"]["host"], 8);
    assert_eq!(report["nodes"]["B"]["global"]["tx_host"], 4);
    assert_eq!(report["nodes"]["A"]["global"]["tx_host"], 4);
}

#[test]
fn replaying_the_capture_twice_counts_replays() {
    let dir = tempfile::tempdir().unwrap();
    // The same 8 frames twice in one file.
    let records = pcap::read(std::fs::File::open(CAPTURE).unwrap()).unwrap();
    let doubled = dir.path().join("twice.pcap");
    let mut w = pcap::Writer::new(std::fs::File::create(&doubled).unwrap()).unwrap();
    for r in records.iter().chain(&records) {
        w.write(r.timestamp_us, &r.packet).unwrap();
    }
    w.finish().unwrap();
    let out = dir.path().join("out.pcap");
    let result = iipnic(&[
        "replay",
        "--config",
        NETWORK,
        "--in",
        doubled.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(result.status.success());
    let report: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(report["emitted"]["host"], 8);
    let drops = &report["nodes"]["B"]["drops"];
    assert_eq!(drops, &serde_json::json!([["replay", 4]]));
}

#[test]
fn config_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(NETWORK).unwrap().replacen(
        "key = \"101112131415161718191a1b1c1d1e1fb0b1b2b3\"",
        "key = \"1011\"",
        1,
    );
    std::fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("key = \"1011\""))
        .unwrap()
        + 1;
    let result = iipnic(&[
        "replay",
        "--config",
        bad.to_str().unwrap(),
        "--in",
        CAPTURE,
        "--out",
        dir.path().join("x.pcap").to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    let expected = format!("{}:{line}: nodes[0].sas[1].key: ", bad.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn missing_input_is_a_clear_error() {
    let result = iipnic(&[
        "replay",
        "--config",
        NETWORK,
        "--in",
        "/nonexistent.pcap",
        "--out",
        "/tmp/x.pcap",
    ]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("/nonexistent.pcap"));
}

#[test]
fn the_main_demo_reports_each_phase_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let result = iipnic(&["demo", "--out", dir.path().to_str().unwrap()]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains("lost while A swapped its route module (1.5-3.0 s): 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lost while A rekeyed its SA to B under load (5.0-6.5 s): 0"),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 unaccounted"), "{stdout}");
    for file in [
        "chart.svg",
        "report.json",
        "esp_sa",
        "link-A-B.pcap",
        "link-B-C.pcap",
        "link-A-C.pcap",
    ] {
        assert!(
            dir.path().join(file).metadata().unwrap().len() > 0,
            "{file}"
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("link A-C down"));
}

#[test]
fn the_linux_demo_shows_the_attacks_refused() {
    let result = iipnic(&["demo", "--linux"]);
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(stdout.matches("ICMP echo request").count(), 5, "{stdout}");
    assert!(stdout.contains("counted as `replay`"));
    assert!(stdout.contains("counted as `auth_failed`"));
}

#[test]
fn the_host_finds_and_precompiles_the_built_policy_modules() {
    let dir = iipnic::policy::module_dir();
    let modules = iipnic::policy::list_modules(&dir)
        .unwrap_or_else(|e| panic!("{e}: `cargo xtask test` builds them first"));
    assert!(
        modules
            .iter()
            .any(|m| m.file_stem().unwrap() == "route_lpm_first"),
        "{modules:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    for target in ["host", "pulley64", "pulley32", "aarch64"] {
        let out = tmp.path().join(format!("rf-{target}.cwasm"));
        let result = iipnic(&[
            "policy",
            "build",
            "route_lpm_first",
            "--target",
            target,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(
            result.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(Path::new(&out).metadata().unwrap().len() > 0);
    }
    let result = iipnic(&[
        "policy",
        "build",
        "route_lpm_first",
        "--target",
        "mips",
        "-o",
        "/tmp/x",
    ]);
    assert!(String::from_utf8_lossy(&result.stderr).contains("unknown target `mips`"));
}

#[test]
fn policy_check_reports_each_example_module() {
    for (name, serves) in [
        ("spd_rules", "spd"),
        ("spd_tenant_allowlist", "spd"),
        ("route_lpm_first", "route"),
        ("route_ecmp", "route"),
        ("route_failover", "route"),
        ("route_first_wat", "route"),
    ] {
        let result = iipnic(&["policy", "check", name]);
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(stdout.contains("ABI v1.0 ok"), "{stdout}");
        assert!(stdout.contains(&format!("serves: {serves}")), "{stdout}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wat");
    std::fs::write(
        &bad,
        r#"(module (import "env" "abort" (func)) (memory (export "memory") 1))"#,
    )
    .unwrap();
    let result = iipnic(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("imports `env.abort`"));
}

#[test]
fn policy_test_runs_cases_and_fails_on_a_wrong_expectation() {
    let cases = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies-wasm/cases/spd-rules.toml"
    );
    let result = iipnic(&["policy", "test", "spd_rules", "--cases", cases]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
    assert!(String::from_utf8_lossy(&result.stdout).contains("4 passed, 0 failed"));
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.toml");
    let text = std::fs::read_to_string(cases).unwrap().replace(
        "expect = { action = \"discard\" }",
        "expect = { action = \"bypass\" }",
    );
    std::fs::write(&wrong, text).unwrap();
    let result = iipnic(&[
        "policy",
        "test",
        "spd_rules",
        "--cases",
        wrong.to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stdout).contains("FAIL  outside every selector"));
}

#[test]
fn ctl_drives_a_running_emulation() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let sock = socket.to_str().unwrap();
    let emulation = Command::new(env!("CARGO_BIN_EXE_iipnic"))
        .args(["emulate", "--duration", "0", "--control", sock])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--socket", sock];
        all.extend_from_slice(args);
        iipnic(&all)
    };
    // Wait for the socket to appear (bounded).
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ok = |args: &[&str], expect: &str| {
        let out = ctl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expect), "{args:?}: {stdout}");
    };
    ok(&["link", "A", "C", "down"], "link A-C down");
    ok(&["swap", "A", "route", "route_ecmp"], "route_ecmp swapped");
    ok(&["rekey", "A", "B"], "A->B: SPI");
    ok(
        &["route-add", "A", "10.9.0.0/16", "--vif", "2"],
        "A: applied",
    );
    ok(&["route-remove", "A", "10.9.0.0/16"], "A: applied");
    ok(&["counters", "B"], "\"tx_underlay\"");
    ok(&["status"], "delivered");
    // Errors are clear and change nothing.
    for (args, expect) in [
        (&["link", "A", "X", "down"][..], "no node named `X`"),
        (
            &["route-remove", "A", "10.9.0.0/16"][..],
            "no route for exactly this prefix",
        ),
        (
            &["swap", "A", "firewall", "route_ecmp"][..],
            "slot must be `route` or `spd`",
        ),
        (
            &["apply", "A", "{\"op\":\"remove_sa\",\"id\":999}"][..],
            "no SA with this id",
        ),
    ] {
        let out = ctl(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expect),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok(&["stop"], "stopping");
    let out = emulation.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(", 0 unaccounted"), "{stdout}");
    assert!(stdout.contains("link A-C down"), "{stdout}");
    // A socket nobody serves is an error that says so.
    let out = ctl(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `iipnic emulate --control"));
}
