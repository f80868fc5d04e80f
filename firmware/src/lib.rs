#![no_std]
#![doc = include_str!("../README.md")]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cache;
pub mod control;
pub mod counters;
pub mod esp;
pub mod fib;
mod hash;
pub mod node;
pub mod packet_buf;
pub mod pipeline;
pub mod policy;
pub mod prefix;
pub mod reassembly;
pub mod sad;
pub mod spd;
pub mod vif;
pub mod wire;

pub use control::{ConfigError, ControlOp, NodeConfig};
pub use counters::DropReason;
pub use node::{Node, NodeLimits};
pub use packet_buf::PacketBuf;
pub use pipeline::{Disposition, Port, Tx};
pub use policy::{NativePolicy, PolicyEngine};
