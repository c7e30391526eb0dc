//! The harness the benches share (`benches/compare/`, `benches/ttfb.rs`): which proxies are compared and how each is started, their processes and what /proc says of them, arguments, and the report.
//!
//! - [`peers`]: the proxies (sssonector and its variants, HAProxy, nginx): finding them,
//!   writing their configs, starting each; the bench's setup.
//! - [`processes`]: a proxy as a child process in its own process group, killed on drop,
//!   on panic and on Ctrl-C; CPU time and RSS of a process tree from /proc.
//! - [`args`]: the benches' command-line numbers.
//! - [`report`]: medians over rounds, ratios, tables (terminal and markdown).
//!
//! The crate knows nothing of the proxy's code: the benches hand it the binary to run.

pub mod args;
pub mod peers;
pub mod processes;
pub mod report;
