//! Control of a running emulation: JSON lines over a Unix socket (`iipnic ctl`), and the
//! paced (wall-clock) loop that serves them between packets.
//!
//! One request per line, one answer per line:
//!
//! ```text
//! {"cmd":"counters","node":"A"}                      -> {"ok":true,"result":{...}}
//! {"cmd":"event","action":"link_down","link":["A","C"]}
//! {"cmd":"event","action":"swap_module","node":"A","slot":"route","module":"route_ecmp"}
//! {"cmd":"event","action":"rekey","from":"A","to":"B"}
//! {"cmd":"control","node":"A","op":{"op":"remove_route","prefix":"10.3.0.0/16"}}
//! {"cmd":"status"}
//! {"cmd":"stop"}
//! ```
//! Errors come back as `{"ok":false,"error":"..."}` and change nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use iipnic_firmware::control::ControlOp;
use serde::{Deserialize, Serialize};

use super::Emulator;
use super::topology::EventAction;

/// A request from `iipnic ctl`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "cmd")]
pub enum Request {
    /// Counters of one node, or of all.
    Counters {
        /// Node name; all nodes when absent.
        #[serde(default)]
        node: Option<String>,
    },
    /// A link change, module swap or rekey, now.
    Event(EventAction),
    /// A firmware control operation on one node (routes, SAs, SPD entries, vifs).
    Control {
        /// The node.
        node: String,
        /// The operation.
        op: ControlOp,
    },
    /// Time, rates and drops.
    Status,
    /// End the emulation.
    Stop,
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request took effect.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn from(result: Result<serde_json::Value, String>) -> Self {
        match result {
            Ok(value) => Response {
                ok: true,
                result: Some(value),
                error: None,
            },
            Err(error) => Response {
                ok: false,
                result: None,
                error: Some(error),
            },
        }
    }
}

type Job = (Request, Sender<Response>);

/// Listens on `path` and forwards each request line to the emulation thread.
pub fn serve(path: &Path) -> Result<Receiver<Job>, String> {
    // A socket left behind by an earlier run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (tx, rx) = channel::<Job>();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || client(stream, tx));
        }
    });
    Ok(rx)
}

fn client(stream: UnixStream, jobs: Sender<Job>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (tx, rx) = channel();
                if jobs.send((request, tx)).is_err() {
                    return;
                }
                rx.recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| Response::from(Err("the emulation did not answer".into())))
            }
            Err(e) => Response::from(Err(format!("bad request: {e}"))),
        };
        let Ok(text) = serde_json::to_string(&response) else {
            return;
        };
        if writeln!(writer, "{text}").is_err() {
            return;
        }
    }
}

/// Sends one request to a running emulation and returns its answer.
pub fn request(socket: &Path, request: &Request) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "{}: {e} (is `iipnic emulate --control {}` running?)",
            socket.display(),
            socket.display()
        )
    })?;
    let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
    writeln!(stream, "{text}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer `{}`: {e}", line.trim()))
}

impl Emulator {
    /// Carries out one control request.
    pub fn handle_request(&mut self, request: Request) -> Result<serde_json::Value, String> {
        match request {
            Request::Counters { node } => {
                let mut all = serde_json::Map::new();
                for (name, n) in self.names.iter().zip(self.nodes.iter()) {
                    if node.as_ref().is_none_or(|wanted| wanted == name) {
                        let snapshot =
                            serde_json::to_value(n.snapshot()).map_err(|e| e.to_string())?;
                        all.insert(name.clone(), snapshot);
                    }
                }
                match (node, all.is_empty()) {
                    (Some(name), true) => Err(format!("no node named `{name}`")),
                    _ => Ok(serde_json::Value::Object(all)),
                }
            }
            Request::Event(action) => {
                let result = self.apply(&action);
                self.events.push(super::report::EventRecord {
                    at_ms: self.now_ms(),
                    action,
                    result: result.clone(),
                });
                result.map(serde_json::Value::String)
            }
            Request::Control { node, op } => {
                let index = self
                    .names
                    .iter()
                    .position(|n| *n == node)
                    .ok_or_else(|| format!("no node named `{node}`"))?;
                let now = self.now_ms();
                self.nodes[index]
                    .apply(op, now)
                    .map_err(|e| e.to_string())?;
                Ok(serde_json::Value::String(format!("{node}: applied")))
            }
            Request::Status => Ok(serde_json::Value::String(self.status_line())),
            Request::Stop => {
                self.stop_requested = true;
                Ok(serde_json::Value::String("stopping".into()))
            }
        }
    }

    /// Runs paced to the wall clock, serving control requests between events, until the
    /// duration (0: until a `stop` request) has passed.
    pub fn run_live(
        &mut self,
        jobs: &Receiver<Job>,
        duration_ms: u64,
        progress: &mut dyn FnMut(&Emulator),
    ) {
        let start = Instant::now();
        let mut last_progress = 0;
        loop {
            let wall_ms = start.elapsed().as_millis() as u64;
            if self.stop_requested || (duration_ms > 0 && wall_ms >= duration_ms) {
                break;
            }
            // Everything due by now, then wait for the next event or a request.
            self.poll_taps();
            self.run_until(wall_ms, &mut |_| {});
            if wall_ms / 1000 != last_progress {
                last_progress = wall_ms / 1000;
                progress(self);
            }
            let next_ns = self.next_event_ns().unwrap_or(u64::MAX);
            // TUN interfaces are polled: wait at most 1 ms with them, 20 ms without.
            let cap = if self.taps.is_empty() { 20 } else { 1 };
            let wait_ms = (next_ns / 1_000_000)
                .saturating_sub(start.elapsed().as_millis() as u64)
                .min(cap);
            if let Ok((request, reply)) = jobs.recv_timeout(Duration::from_millis(wait_ms.max(1))) {
                let _ = reply.send(Response::from(self.handle_request(request)));
            }
        }
        // Stop the sources and let what is in flight land, so every packet is accounted for.
        self.draining = true;
        let now = self.now_ms();
        self.run_until(now + 1_000, &mut |_| {});
        if self.stop_requested {
            // Let the client thread write the answer to `stop` before the process ends.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The default control socket path for a run.
pub fn default_socket() -> PathBuf {
    std::env::temp_dir().join("iipnic.sock")
}
