//! The 64-byte request/response load of the compare bench as a stand-alone program, so an
//! outside tool (`perf stat` in `benches/rr-syscalls.sh`) can watch a proxy under it.
//!
//! `rr_load upstream` serves a built-in echo upstream on 127.0.0.1:0, prints its address
//! and serves until its standard input closes; `rr_load drive ADDR SECONDS` runs 50
//! connections of 64-byte requests against ADDR and prints `requests N seconds S`.

use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use sssonector_loadgen::{
    self as loadgen, RequestResponse, ServerKind, Upstream, BENCH_RR_CONNECTIONS as CONNECTIONS,
    BENCH_RR_PAYLOAD as PAYLOAD,
};

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [mode] if mode == "upstream" => {
            let up = Upstream::start(ServerKind::Echo).map_err(|e| format!("upstream: {e}"))?;
            println!("{}", up.addr());
            // Serve until whoever started us closes our stdin (or kills us).
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            up.stop();
            Ok(())
        }
        [mode, addr, secs] if mode == "drive" => {
            let target: SocketAddr = addr
                .parse()
                .map_err(|e| format!("drive: bad address {addr:?}: {e}"))?;
            let secs: u64 = secs
                .parse()
                .map_err(|e| format!("drive: bad seconds {secs:?}: {e}"))?;
            let mut cfg = RequestResponse::new(target, CONNECTIONS, PAYLOAD);
            cfg.duration = Some(Duration::from_secs(secs));
            let r = loadgen::request_response(&cfg).map_err(|e| format!("drive {target}: {e}"))?;
            println!(
                "requests {} seconds {:.3}",
                r.requests,
                r.elapsed.as_secs_f64()
            );
            Ok(())
        }
        _ => Err("usage: rr_load upstream | rr_load drive ADDR SECONDS".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rr_load: {e}");
            ExitCode::FAILURE
        }
    }
}
