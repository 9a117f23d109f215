//! The jobx executor plugin interface.
//!
//! A plugin is a `cdylib` that runs steps on nodes. It implements
//! [`Executor`] and exports it with [`export_plugin!`]; the macro generates a
//! stable C ABI ([`abi`]) so the plugin and jobxd need not be built by the
//! same compiler or with the same dependencies. Data crosses the boundary as
//! JSON built from the types in this crate ([`StepRequest`], [`StepResult`],
//! [`HttpRequest`], [`HttpResponse`]).
//!
//! With the `host` feature, [`host`] loads plugin libraries and drives them;
//! jobxd uses it, plugins do not need it.
//!
//! See the crate's README for a step-by-step guide to writing a plugin.

#![warn(missing_docs)]

pub mod abi;
/// Standard base64 (RFC 4648): how bytes travel in the JSON of HTTP bodies,
/// for plugins and hosts that need the same encoding elsewhere.
pub mod base64;
pub mod config;
pub mod plugin;
pub mod testing;
mod types;

#[cfg(feature = "host")]
pub mod host;

pub use abi::ABI_VERSION;
pub use plugin::{Executor, Reporter, Responder, RunId};
pub use types::{
    HttpRequest, HttpResponse, Node, PrepareRequest, StepKind, StepRequest, StepResult, Stream,
};

/// Receives what one run reports: its output lines and exactly one `done`.
///
/// The host implements it to collect a run ([`host::PluginSet::start`]);
/// plugin authors can implement it to unit-test an executor through
/// [`Reporter::from_sink`]. Called from plugin threads: keep it quick and
/// non-blocking, and do not call back into the plugin from inside it
/// expecting a synchronous result.
pub trait RunSink: Send + Sync {
    /// One line of output, without its newline; not necessarily UTF-8.
    fn line(&self, stream: Stream, text: &[u8]);
    /// The run ended.
    fn done(&self, result: StepResult);
}

/// The README's examples compile.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
