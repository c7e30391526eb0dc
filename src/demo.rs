//! `sssonector demo`: the proxy on the embedded default config in front of a built-in echo upstream.

use std::time::Duration;

use crate::error::ProxyError;

/// Runs the demo; `duration` stops it by itself, otherwise it runs until Ctrl-C.
pub fn run(_duration: Option<Duration>) -> Result<(), ProxyError> {
    todo!("loadgen helper")
}
