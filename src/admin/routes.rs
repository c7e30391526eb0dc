//! What each admin path answers.

use super::http::{Request, Response};
use super::status_page;
use super::AdminState;
use crate::metrics::StatsSnapshot;
use crate::telemetry;

/// A worker publishes every 100 ms; one that has not for this long has a stuck loop.
pub const HEARTBEAT_STALE_MS: u64 = 3000;

/// The probes: cheap enough for the admin server's event loop to answer itself (no pool
/// lock, no request thread).
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

pub fn route(state: &AdminState, req: &Request) -> Response {
    match req.path.as_str() {
        "/metrics" => metrics(state),
        "/healthz" => healthz(&state.view.heartbeat_ages()),
        "/readyz" => readyz(&state.view.readiness()),
        "/" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: status_page::render(&state.view.stats(), state.metrics_interval),
        },
        _ => Response::text(404, "not found: try /, /metrics, /healthz or /readyz\n"),
    }
}

fn metrics(state: &AdminState) -> Response {
    if !state.metrics_enabled {
        return Response::text(
            404,
            "metrics are off (connection.monitoring.enabled: false); /healthz, /readyz and / stay on\n",
        );
    }
    Response {
        status: 200,
        content_type: telemetry::CONTENT_TYPE,
        body: telemetry::render(&state.view.stats(), &state.sampler.last()),
    }
}

/// 200 while every worker's loop turns. A worker that finished its drain is not stuck:
/// failing liveness then would get the process killed with sessions still draining.
pub fn healthz(heartbeat_age_ms: &[Option<u64>]) -> Response {
    let stuck: Vec<String> = heartbeat_age_ms
        .iter()
        .enumerate()
        .filter_map(|(i, age)| age.map(|a| (i, a)))
        .filter(|(_, age)| *age > HEARTBEAT_STALE_MS)
        .map(|(i, age)| format!("worker {i}: its loop has not turned for {age} ms\n"))
        .collect();
    if stuck.is_empty() {
        let turning = heartbeat_age_ms.iter().flatten().count();
        Response::text(200, format!("ok: {turning} workers turning\n"))
    } else {
        Response::text(503, stuck.concat())
    }
}

/// 200 only when every listener is bound, each has a healthy endpoint, and the proxy is
/// not draining; otherwise 503 with one line per failing condition.
pub fn readyz(s: &StatsSnapshot) -> Response {
    let mut failing = Vec::new();
    if s.draining {
        failing.push("draining: the proxy is shutting down".to_string());
    }
    for (i, l) in s.listeners.iter().enumerate() {
        if !l.bound {
            failing.push(format!("listener `{}` ({}) is not bound", l.name, l.addr));
        }
        let mine = s.endpoints.iter().filter(|e| e.listener == i && !e.retired);
        if !mine.clone().any(|e| e.up) {
            let addrs: Vec<String> = mine.map(|e| e.addr.to_string()).collect();
            failing.push(format!(
                "listener `{}` has no healthy endpoint (down: {})",
                l.name,
                addrs.join(", ")
            ));
        }
    }
    if failing.is_empty() {
        Response::text(200, "ready\n")
    } else {
        Response::text(503, failing.join("\n") + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{EndpointSnapshot, ListenerSnapshot};

    fn snapshot() -> StatsSnapshot {
        let addr = "127.0.0.1:1".parse().expect("addr");
        StatsSnapshot {
            listeners: vec![ListenerSnapshot {
                name: "web".into(),
                addr,
                bound: true,
            }],
            endpoints: vec![EndpointSnapshot {
                addr,
                listener: 0,
                retired: false,
                up: true,
                active: 0,
                probes_failed: 0,
                idle: 0,
                sessions_total: 0,
                bytes_to: 0,
                bytes_from: 0,
                connect_errors: 0,
                last_probe: None,
            }],
            heartbeat_age_ms: vec![Some(100)],
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn readyz_names_each_failing_condition() {
        let mut s = snapshot();
        assert_eq!(readyz(&s).status, 200);
        s.endpoints[0].up = false;
        s.draining = true;
        let r = readyz(&s);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("draining"), "{}", r.body);
        assert!(r.body.contains("no healthy endpoint"), "{}", r.body);
    }

    #[test]
    fn healthz_fails_on_a_stuck_worker() {
        let mut s = snapshot();
        assert_eq!(healthz(&s.heartbeat_age_ms).status, 200);
        s.heartbeat_age_ms.push(Some(HEARTBEAT_STALE_MS + 1));
        let r = healthz(&s.heartbeat_age_ms);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("worker 1"), "{}", r.body);
        s.heartbeat_age_ms[1] = None;
        assert_eq!(
            healthz(&s.heartbeat_age_ms).status,
            200,
            "a finished worker is not stuck"
        );
    }
}
