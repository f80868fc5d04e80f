//! TAP mode: the kernel's own ping, in one network namespace, reaches a host in another
//! through the emulated IIPtran network (node A -> ESP -> node C). Needs root (network
//! namespaces, /dev/net/tun), as in CI.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespaces however the test ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

#[test]
fn ping_between_namespaces_through_the_emulated_network() {
    let root = String::from_utf8_lossy(&sh(&["id", "-u"]).stdout).trim() == "0";
    if !root {
        eprintln!(
            "SKIPPED: TAP mode needs root (network namespaces, /dev/net/tun); CI runs as root"
        );
        return;
    }
    let id = std::process::id() % 10_000;
    let (tap_a, tap_c) = (format!("iipa{id}"), format!("iipc{id}"));
    let (ns_a, ns_c) = (format!("iipnic-a-{id}"), format!("iipnic-c-{id}"));
    let mut emulation = Command::new(env!("CARGO_BIN_EXE_iipnic"))
        .args([
            "emulate",
            "--duration",
            "8000",
            "--tap",
            &format!("A={tap_a}"),
            "--tap",
            &format!("C={tap_c}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The interfaces exist once the emulator has opened them.
    let start = Instant::now();
    while !sh(&["ip", "link", "show", &tap_c]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "TUN interfaces never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _cleanup = Namespaces(vec![ns_a.clone(), ns_c.clone()]);
    for (ns, tap, addr) in [
        (&ns_a, &tap_a, "10.1.0.100/16"),
        (&ns_c, &tap_c, "10.3.0.100/16"),
    ] {
        ok(&["ip", "netns", "add", ns]);
        ok(&["ip", "link", "set", tap, "netns", ns]);
        ok(&["ip", "-n", ns, "addr", "add", addr, "dev", tap]);
        ok(&["ip", "-n", ns, "link", "set", tap, "up"]);
        ok(&["ip", "-n", ns, "route", "add", "10.0.0.0/8", "dev", tap]);
    }
    let ping = sh(&[
        "ip",
        "netns",
        "exec",
        &ns_a,
        "ping",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "2",
        "10.3.0.100",
    ]);
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(text.contains("5 received"), "{text}");
    let _ = emulation.kill();
    let _ = emulation.wait();
}
