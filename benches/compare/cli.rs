//! The compare bench's arguments: `--quick` and `--rounds N`, and what each mode measures.

use std::time::Duration;

use sssonector_bench::args::{number_arg, quick};

pub const MIB: u64 = 1024 * 1024;
/// Full run, per round and proxy: MiB of each bulk stream and seconds of the
/// request/response run. Three rounds of three proxies take about 2.5 minutes on 2 cores.
const FULL_BULK_MIB: u64 = 2048;
const FULL_RR_SECS: u64 = 10;

pub struct Params {
    pub quick: bool,
    /// Each round runs every measurement on every proxy; the report shows medians.
    pub rounds: usize,
    pub bulk_bytes: u64,
    pub rr_duration: Duration,
}

/// `--quick` and `--rounds N` (or `--rounds=N`); cargo bench's own `--bench` and anything
/// else unknown is ignored on purpose.
pub fn parse_args(args: &[String]) -> Result<Params, String> {
    let quick = quick(args);
    let rounds = number_arg(args, "--rounds", 1)?;
    Ok(if quick {
        Params {
            quick,
            rounds: rounds.unwrap_or(1),
            bulk_bytes: 512 * MIB,
            rr_duration: Duration::from_secs(3),
        }
    } else {
        Params {
            quick,
            rounds: rounds.unwrap_or(3),
            bulk_bytes: FULL_BULK_MIB * MIB,
            rr_duration: Duration::from_secs(FULL_RR_SECS),
        }
    })
}
