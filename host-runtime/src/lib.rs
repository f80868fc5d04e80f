//! The iipnic host runtime: everything that runs on a workstation around the firmware
//! library: the offline replay, pcap files, network description files and the CLI.

pub mod config;
pub mod demo;
pub mod emulator;
pub mod pcap;
pub mod policy;
pub mod policy_cases;
pub mod replay;
