//! How a step runs on a host, shared by jobx's `local` executor (on the
//! daemon host) and `jobx-agent` (on a node), so both keep one contract:
//!
//! * [`WATCHDOG`]: the fixed `sh` text that leads a step's process group
//!   and kills it when the lifeline pipe closes;
//! * [`ScriptFile`]: the script in a private temporary file;
//! * [`resolve_interpreter`]: `bash`, `sh`, `python3`, `perl` from `PATH`,
//!   or an absolute path;
//! * [`lines`]: output split into lines of bounded length;
//! * [`copy`]: what ends every copy (`chmod`, `chown`, the summary line),
//!   modes and temporary names.
//!
//! A plain library: the plugin's cdylib is not linked into the agent.

#![forbid(unsafe_code)]

pub mod copy;
pub mod interpreter;
pub mod lines;
pub mod script;
pub mod watchdog;

pub use copy::{chown, finish_copy, parse_mode, temp_name, CopyStats};
pub use interpreter::resolve_interpreter;
pub use script::{unique, ScriptFile};
pub use watchdog::WATCHDOG;
