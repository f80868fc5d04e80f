//! The module side: the [`Policy`] trait a policy implements, the state the exported
//! functions share, and the two imports.

use core::cell::UnsafeCell;

use crate::abi::{
    MAX_CONFIG_LEN, QUERY_BUFFER_LEN, RouteDecision, RouteQuery, SpdAction, SpdDecision, SpdQuery,
};

/// A policy: built from its configuration blob, then asked questions. Implement the
/// questions your module answers and export them with [`crate::export_policy!`].
pub trait Policy: Sized {
    /// Parses the configuration; `Err` carries a code the host reports.
    fn init(config: &[u8]) -> Result<Self, i32>;

    /// Answers an SPD query. The default discards, as an SPD with no entries does.
    fn spd_decide(&mut self, _query: &SpdQuery) -> SpdDecision {
        SpdDecision {
            action: SpdAction::Discard,
            entry: None,
            cacheable: true,
        }
    }

    /// Answers a route query. The default finds no route.
    fn route_select(&mut self, _query: &RouteQuery) -> RouteDecision {
        RouteDecision::NO_ROUTE
    }

    /// The module's own checks, run by the host before a swap; `false` refuses the swap.
    fn self_test(&mut self) -> bool {
        true
    }
}

/// Status codes the exported functions return.
pub mod status {
    /// A decision was written.
    pub const OK: i32 = 0;
    /// The query in the buffer could not be decoded.
    pub const BAD_QUERY: i32 = 1;
    /// `iipnic_init` has not succeeded.
    pub const NOT_INITIALISED: i32 = 2;
    /// The configuration blob is larger than [`crate::abi::MAX_CONFIG_LEN`].
    pub const CONFIG_TOO_LARGE: i32 = 3;
    /// The self-test failed.
    pub const SELF_TEST_FAILED: i32 = 4;
}

struct Inner<T> {
    query: [u8; QUERY_BUFFER_LEN],
    config: [u8; MAX_CONFIG_LEN],
    policy: Option<T>,
}

/// Everything a module keeps between calls. One static per module, made by the macro.
pub struct State<T> {
    inner: UnsafeCell<Inner<T>>,
}

// SAFETY: a WebAssembly instance runs one call at a time on one thread, and the host
// touches linear memory only between calls; nothing is ever shared across threads.
unsafe impl<T> Sync for State<T> {}

impl<T: Policy> State<T> {
    /// Empty state.
    pub const fn new() -> Self {
        State {
            inner: UnsafeCell::new(Inner {
                query: [0; QUERY_BUFFER_LEN],
                config: [0; MAX_CONFIG_LEN],
                policy: None,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<T>) -> R) -> R {
        // SAFETY: see the `Sync` impl: calls never overlap, and the reference lives only
        // for this one closure inside one exported function.
        f(unsafe { &mut *self.inner.get() })
    }

    /// `iipnic_query_buffer`.
    pub fn query_ptr(&self) -> i32 {
        self.with(|inner| inner.query.as_mut_ptr() as usize as i32)
    }

    /// `iipnic_config_buffer`.
    pub fn config_ptr(&self, len: i32) -> i32 {
        match usize::try_from(len) {
            Ok(len) if len <= MAX_CONFIG_LEN => {
                self.with(|inner| inner.config.as_mut_ptr() as usize as i32)
            }
            _ => 0,
        }
    }

    /// `iipnic_init`.
    pub fn init(&self, len: i32) -> i32 {
        self.with(|inner| Self::init_inner(inner, len))
    }

    fn init_inner(inner: &mut Inner<T>, len: i32) -> i32 {
        let Some(config) = usize::try_from(len)
            .ok()
            .and_then(|l| inner.config.get(..l))
        else {
            return status::CONFIG_TOO_LARGE;
        };
        match T::init(config) {
            Ok(policy) => {
                inner.policy = Some(policy);
                status::OK
            }
            Err(code) => code,
        }
    }

    /// `iipnic_self_test`.
    pub fn self_test(&self) -> i32 {
        match self.with(|inner| inner.policy.as_mut().map(T::self_test)) {
            Some(true) => status::OK,
            Some(false) => status::SELF_TEST_FAILED,
            None => status::NOT_INITIALISED,
        }
    }

    /// `spd_decide`.
    pub fn spd_decide(&self) -> i32 {
        self.with(Self::spd_inner)
    }

    fn spd_inner(inner: &mut Inner<T>) -> i32 {
        let Some(policy) = inner.policy.as_mut() else {
            return status::NOT_INITIALISED;
        };
        let Some(query) = SpdQuery::decode(&inner.query) else {
            return status::BAD_QUERY;
        };
        match policy.spd_decide(&query).encode(&mut inner.query) {
            Some(()) => status::OK,
            None => status::BAD_QUERY,
        }
    }

    /// `route_select`.
    pub fn route_select(&self) -> i32 {
        self.with(Self::route_inner)
    }

    fn route_inner(inner: &mut Inner<T>) -> i32 {
        let Some(policy) = inner.policy.as_mut() else {
            return status::NOT_INITIALISED;
        };
        let Some(query) = RouteQuery::decode(&inner.query) else {
            return status::BAD_QUERY;
        };
        match policy.route_select(&query).encode(&mut inner.query) {
            Some(()) => status::OK,
            None => status::BAD_QUERY,
        }
    }
}

impl<T: Policy> Default for State<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "iipnic")]
    unsafe extern "C" {
        pub fn log(level: i32, ptr: *const u8, len: usize);
        pub fn now_ms() -> i64;
    }
}

/// Writes a line to the node's policy log (bounded by the host; never blocks).
pub fn log(level: i32, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host reads `len` bytes at `ptr` from this module's own memory.
    unsafe {
        imports::log(level, message.as_ptr(), message.len())
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Node time in milliseconds (monotonic). Zero outside a host.
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: a host function without arguments.
    let now = unsafe { imports::now_ms() };
    #[cfg(not(target_arch = "wasm32"))]
    let now = 0;
    u64::try_from(now).unwrap_or(0)
}
