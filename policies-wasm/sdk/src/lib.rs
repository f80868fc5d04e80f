//! Write iipnic SPD and route-selection policies in Rust and compile them to WebAssembly.
//!
//! A policy is a type implementing [`Policy`]; [`export_policy!`] exports what the host
//! calls (ABI v1, `docs/policy-abi.md`). The [`abi`] module holds the wire layouts and is
//! shared with the firmware's policy host, so both sides read the same definitions.
//!
//! ```ignore
//! struct FirstUp;
//! impl Policy for FirstUp {
//!     fn init(_: &[u8]) -> Result<Self, i32> { Ok(FirstUp) }
//!     fn route_select(&mut self, q: &RouteQuery) -> RouteDecision {
//!         q.candidates().iter().position(|c| c.up)
//!             .map_or(RouteDecision::NO_ROUTE, |i| RouteDecision::use_candidate(i as u8))
//!     }
//! }
//! export_policy!(FirstUp, route_select);
//! ```
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod guest;

pub use abi::{
    Addr, Candidate, Direction, RouteDecision, RouteQuery, SpdAction, SpdDecision, SpdQuery,
    SpdRule,
};
pub use guest::{Policy, log, now_ms};

/// A panic inside a module traps: the host counts the trap and applies the slot's
/// failure policy. Only on wasm32, so host tests keep std's handler.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// Exports a [`Policy`] type and the decisions it answers:
/// `export_policy!(MyPolicy, spd_decide)`, `export_policy!(MyPolicy, route_select)` or both.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty $(, $decision:ident)+ $(,)?) => {
        static IIPNIC_STATE: $crate::guest::State<$policy> = $crate::guest::State::new();

        /// ABI version marker the host checks before anything else.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_abi_version() -> i32 {
            $crate::abi::abi_version() as i32
        }

        /// Where the host writes each query and reads each decision.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_query_buffer() -> i32 {
            IIPNIC_STATE.query_ptr()
        }

        /// Where the host writes the configuration blob.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_config_buffer(len: i32) -> i32 {
            IIPNIC_STATE.config_ptr(len)
        }

        /// Parses the configuration blob.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_init(len: i32) -> i32 {
            IIPNIC_STATE.init(len)
        }

        /// The module's own checks.
        #[unsafe(no_mangle)]
        pub extern "C" fn iipnic_self_test() -> i32 {
            IIPNIC_STATE.self_test()
        }

        $( $crate::export_policy!(@decision $decision); )+
    };
    (@decision spd_decide) => {
        /// Answers the SPD query in the buffer.
        #[unsafe(no_mangle)]
        pub extern "C" fn spd_decide() -> i32 {
            IIPNIC_STATE.spd_decide()
        }
    };
    (@decision route_select) => {
        /// Answers the route query in the buffer.
        #[unsafe(no_mangle)]
        pub extern "C" fn route_select() -> i32 {
            IIPNIC_STATE.route_select()
        }
    };
}
