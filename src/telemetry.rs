//! The Prometheus exposition of a [`StatsSnapshot`]: every metric is described once here
//! (name, type, unit, help), in tables, so that one more counter or one more `reason`
//! value is one line. Rendering goes through `metrics-exporter-prometheus`'s recorder;
//! histograms, which the workers keep as bucket counts, are written beside it (the
//! recorder only takes single observations).
//!
//! Values are read at scrape time from what the workers last published (every 100 ms).
//! The spec's interval gauges (errors and failed health checks "in the last
//! `metrics_interval`", the allocation rate) come from a [`WindowSampler`] that closes
//! one window every `metrics_interval`.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::driver::DataPlane;
use crate::metrics::{EndpointSnapshot, Histogram, StatsSnapshot, WorkerHistograms};
use crate::upstream::Discard;

/// The exposition's content type (text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// What happened during the last closed window of `metrics_interval`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub connect_errors: u64,
    pub health_check_failures: u64,
    /// Buffer slot checkouts per second.
    pub allocations_per_sec: f64,
}

/// An unlabelled metric.
struct Scalar {
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    help: &'static str,
    value: fn(&StatsSnapshot, &Window) -> f64,
}

/// One label value of a [`Labelled`] family and the counter field it reads.
type LabelValue = (&'static str, fn(&StatsSnapshot) -> u64);

/// A family with one label whose values are fields of the summed worker counters.
struct Labelled {
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    help: &'static str,
    label: &'static str,
    values: &'static [LabelValue],
}

/// A family with `listener` and `endpoint` labels, one series per endpoint.
struct PerEndpoint {
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    help: &'static str,
    /// `None`: no series for this endpoint (e.g. never probed).
    value: fn(&EndpointSnapshot) -> Option<f64>,
}

struct HistogramDesc {
    name: &'static str,
    help: &'static str,
    of: fn(&WorkerHistograms) -> &Histogram,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The spec's ten first, spelled as the spec spells them; then what an operator needs to
/// tell the proxy from the backend.
#[rustfmt::skip]
const SCALARS: &[Scalar] = &[
    Scalar { name: "sssonector_pool_active_connections", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Client sessions the proxy holds (waiting for admission, connecting or relaying), across workers.", value: |s, _| s.total.sessions_active as f64 },
    Scalar { name: "sssonector_pool_idle_connections", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Warm idle upstream connections in the pool (one pool for every worker), across endpoints.", value: |s, _| s.pool.idle as f64 },
    Scalar { name: "sssonector_pool_connection_errors", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Upstream dial attempts (clients' and pool refills) that failed during the last metrics_interval.", value: |_, w| w.connect_errors as f64 },
    Scalar { name: "sssonector_pool_health_check_failures", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Health probes that failed during the last metrics_interval, all endpoints.", value: |_, w| w.health_check_failures as f64 },
    Scalar { name: "sssonector_buffer_pool_size", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Buffer slots of buffer.size bytes, across workers (buffer.max_pool_size, rounded up to a multiple of the worker count).", value: |s, _| s.total.buffer_slots_total as f64 },
    Scalar { name: "sssonector_buffer_pool_utilization", kind: Kind::Gauge, unit: None, help: "Fraction (0..1) of buffer slots holding data received and not yet sent.", value: |s, _| ratio(s.total.buffer_slots_in_use, s.total.buffer_slots_total) },
    Scalar { name: "sssonector_buffer_allocation_rate", kind: Kind::Gauge, unit: Some(Unit::CountPerSecond), help: "Buffer slot checkouts per second (one per receive), averaged over the last metrics_interval.", value: |_, w| w.allocations_per_sec },
    Scalar { name: "sssonector_connection_errors_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Connection errors: failed upstream dial attempts plus errors (reset, broken pipe) on either side of a session.", value: |s, _| (s.total.upstream_connect_errors + s.total.client_errors + s.total.upstream_errors) as f64 },
    Scalar { name: "sssonector_connection_timeouts_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Timeouts: upstream dials past pool.connect_timeout, sessions idle past session.idle_timeout, sessions whose peer took nothing for session.send_timeout, clients queued past pool.queue_timeout.", value: |s, _| (s.total.upstream_connect_timeouts + s.total.session_timeouts + s.total.send_timeouts + s.total.queue_timeouts) as f64 },
    Scalar { name: "sssonector_health_check_failures_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Health probes that failed, all endpoints.", value: |s, _| s.health_check_failures as f64 },
    Scalar { name: "sssonector_sessions_accepted_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Client connections accepted.", value: |s, _| s.total.sessions_total as f64 },
    Scalar { name: "sssonector_sessions_closed_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Client sessions ended, whatever the reason (see sssonector_session_close_reasons_total).", value: |s, _| s.total.sessions_closed as f64 },
    Scalar { name: "sssonector_admission_admitted", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Sessions holding one of the pool.max_active slots.", value: |s, _| s.admitted as f64 },
    Scalar { name: "sssonector_admission_queue_length", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Clients waiting for a pool.max_active slot now.", value: |s, _| s.queued as f64 },
    Scalar { name: "sssonector_admission_queued_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Clients that had to wait for a pool.max_active slot.", value: |s, _| s.total.queued_total as f64 },
    Scalar { name: "sssonector_pool_hits_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Sessions served with a warm pooled upstream connection.", value: |s, _| s.total.pool_hits as f64 },
    Scalar { name: "sssonector_pool_misses_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Sessions that dialed their upstream because the pool had no live connection (pool enabled).", value: |s, _| s.total.pool_misses as f64 },
    Scalar { name: "sssonector_pool_dials_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Upstream dials made to refill the warm pool.", value: |s, _| s.total.pool_dials as f64 },
    Scalar { name: "sssonector_connect_retries_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Upstream dial retries made for clients after a failed attempt.", value: |s, _| s.total.connect_retries as f64 },
    Scalar { name: "sssonector_buffer_slots_in_use", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Buffer slots holding data received and not yet sent.", value: |s, _| s.total.buffer_slots_in_use as f64 },
    Scalar { name: "sssonector_buffer_slots_in_use_max", kind: Kind::Gauge, unit: Some(Unit::Count), help: "High-water mark of buffer slots in use since start, summed over workers.", value: |s, _| s.total.buffer_slots_in_use_max as f64 },
    Scalar { name: "sssonector_buffer_allocations_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Buffer slot checkouts (one per receive).", value: |s, _| s.total.buffer_allocations as f64 },
    Scalar { name: "sssonector_buffer_waits_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Receives that found the buffer pool empty (ENOBUFS) and waited for a slot.", value: |s, _| s.total.buffer_waits as f64 },
    Scalar { name: "sssonector_buffer_pool_registered", kind: Kind::Gauge, unit: None, help: "1 when every worker's buffers are registered with io_uring as fixed buffers; 0 after a memlock refusal (plain sends).", value: |s, _| f64::from(u8::from(s.buffers_registered)) },
    Scalar { name: "sssonector_draining", kind: Kind::Gauge, unit: None, help: "1 while a drain (SIGTERM) or stop is under way.", value: |s, _| f64::from(u8::from(s.draining)) },
];

const LABELLED: &[Labelled] = &[
    Labelled {
        name: "sssonector_data_plane",
        kind: Kind::Gauge,
        unit: None,
        help: "1 for the data plane the workers run on, chosen at start (io_uring, or epoll where io_uring is refused or configured), 0 for the other.",
        label: "data_plane",
        values: &[
            ("io_uring", |s| u64::from(s.data_plane == DataPlane::IoUring)),
            ("epoll", |s| u64::from(s.data_plane == DataPlane::Epoll)),
        ],
    },
    Labelled {
        name: "sssonector_relayed_bytes_total",
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes received for relaying, by direction.",
        label: "direction",
        values: &[
            ("client_to_upstream", |s| s.total.bytes_client_to_upstream),
            ("upstream_to_client", |s| s.total.bytes_upstream_to_client),
        ],
    },
    Labelled {
        name: "sssonector_session_close_reasons_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Clients closed by the proxy rather than by their peers, by reason.",
        label: "reason",
        values: &[
            ("idle_timeout", |s| s.total.session_timeouts),
            ("send_timeout", |s| s.total.send_timeouts),
            ("connect_failed", |s| s.total.connection_failures),
            ("queue_timeout", |s| s.total.queue_timeouts),
            ("queue_full", |s| s.total.queue_rejected),
        ],
    },
    Labelled {
        name: "sssonector_peer_errors_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help:
            "Errors (reset, broken pipe, ...) on established sessions, by the side they came from.",
        label: "side",
        values: &[
            ("client", |s| s.total.client_errors),
            ("upstream", |s| s.total.upstream_errors),
        ],
    },
    Labelled {
        name: "sssonector_timeouts_by_kind_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "The parts of sssonector_connection_timeouts_total, by kind.",
        label: "kind",
        values: &[
            ("connect", |s| s.total.upstream_connect_timeouts),
            ("session_idle", |s| s.total.session_timeouts),
            ("session_send", |s| s.total.send_timeouts),
            ("queue", |s| s.total.queue_timeouts),
        ],
    },
];

#[rustfmt::skip]
const PER_ENDPOINT: &[PerEndpoint] = &[
    PerEndpoint { name: "sssonector_endpoint_up", kind: Kind::Gauge, unit: None, help: "1 while the endpoint is healthy (receives new sessions), 0 while marked down.", value: |e| Some(f64::from(u8::from(e.up))) },
    PerEndpoint { name: "sssonector_endpoint_active_sessions", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Sessions relaying to the endpoint now.", value: |e| Some(e.active as f64) },
    PerEndpoint { name: "sssonector_endpoint_idle_connections", kind: Kind::Gauge, unit: Some(Unit::Count), help: "Warm idle pooled connections to the endpoint.", value: |e| Some(e.idle as f64) },
    PerEndpoint { name: "sssonector_endpoint_sessions_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Sessions that started relaying to the endpoint.", value: |e| Some(e.sessions_total as f64) },
    PerEndpoint { name: "sssonector_endpoint_sent_bytes_total", kind: Kind::Counter, unit: Some(Unit::Bytes), help: "Bytes from clients relayed to the endpoint.", value: |e| Some(e.bytes_to as f64) },
    PerEndpoint { name: "sssonector_endpoint_received_bytes_total", kind: Kind::Counter, unit: Some(Unit::Bytes), help: "Bytes received from the endpoint for its clients.", value: |e| Some(e.bytes_from as f64) },
    PerEndpoint { name: "sssonector_endpoint_connect_errors_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Failed dial attempts to the endpoint.", value: |e| Some(e.connect_errors as f64) },
    PerEndpoint { name: "sssonector_endpoint_health_check_failures_total", kind: Kind::Counter, unit: Some(Unit::Count), help: "Failed health probes of the endpoint.", value: |e| Some(e.probes_failed as f64) },
    PerEndpoint { name: "sssonector_endpoint_last_health_check_age_seconds", kind: Kind::Gauge, unit: Some(Unit::Seconds), help: "Seconds since the endpoint's last health probe (no series before the first).", value: |e| e.last_probe.map(|(age_ms, _)| age_ms as f64 / 1000.0) },
];

#[rustfmt::skip]
const HISTOGRAMS: &[HistogramDesc] = &[
    HistogramDesc { name: "sssonector_upstream_connect_duration_seconds", help: "Time from the start of an upstream dial to its completion, successful dials (clients' and pool refills), in seconds.", of: |h| &h.connect_ms },
    HistogramDesc { name: "sssonector_admission_queue_wait_seconds", help: "Time admitted clients waited for a pool.max_active slot, for those that waited, in seconds.", of: |h| &h.queue_wait_ms },
    HistogramDesc { name: "sssonector_session_duration_seconds", help: "Duration of relaying sessions, from upstream connected to close, in seconds.", of: |h| &h.session_ms },
];

/// Every metric name the exposition can contain (for tests and docs).
pub fn metric_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = SCALARS.iter().map(|m| m.name).collect();
    names.extend(LABELLED.iter().map(|m| m.name));
    names.extend(PER_ENDPOINT.iter().map(|m| m.name));
    names.extend(HISTOGRAMS.iter().map(|m| m.name));
    names.extend([
        POOL_DISCARDED,
        "sssonector_listener_bound",
        "sssonector_worker_heartbeat_age_seconds",
    ]);
    names
}

/// Discarded idle pool connections, one `reason` per [`Discard::ALL`]: the warm pool is
/// shared by the workers, so these come from [`StatsSnapshot::pool`], not their counters.
const POOL_DISCARDED: &str = "sssonector_pool_discarded_total";

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

fn help_with_unit(help: &str, unit: Option<Unit>) -> SharedString {
    match unit {
        Some(u) if u != Unit::Count => format!("{help} Unit: {}.", u.as_str()).into(),
        _ => help.to_string().into(),
    }
}

/// Writes one series into the recorder (described once per render, by the caller).
fn set(r: &metrics_exporter_prometheus::PrometheusRecorder, kind: Kind, key: Key, v: f64) {
    match kind {
        Kind::Gauge => r.register_gauge(&key, &METADATA).set(v),
        // Every counter here only grows: the workers' totals never go down.
        Kind::Counter => r.register_counter(&key, &METADATA).absolute(v as u64),
    }
}

fn describe(
    r: &metrics_exporter_prometheus::PrometheusRecorder,
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    help: &str,
) {
    let help = help_with_unit(help, unit);
    match kind {
        Kind::Gauge => r.describe_gauge(KeyName::from(name), unit, help),
        Kind::Counter => r.describe_counter(KeyName::from(name), unit, help),
    }
}

/// Renders `s` in the Prometheus text format. A fresh recorder per scrape: series of
/// endpoints that a reload removed disappear at once, and concurrent scrapes share nothing.
pub fn render(s: &StatsSnapshot, w: &Window) -> String {
    let r = PrometheusBuilder::new().build_recorder();
    for m in SCALARS {
        describe(&r, m.name, m.kind, m.unit, m.help);
        set(&r, m.kind, Key::from_name(m.name), (m.value)(s, w));
    }
    for m in LABELLED {
        describe(&r, m.name, m.kind, m.unit, m.help);
        for (label, value) in m.values {
            let key = Key::from_parts(m.name, vec![Label::new(m.label, *label)]);
            set(&r, m.kind, key, value(s) as f64);
        }
    }
    describe(
        &r,
        POOL_DISCARDED,
        Kind::Counter,
        Some(Unit::Count),
        "Idle pooled upstream connections closed unused, by reason.",
    );
    for reason in Discard::ALL {
        let key = Key::from_parts(POOL_DISCARDED, vec![Label::new("reason", reason.as_str())]);
        set(&r, Kind::Counter, key, s.pool.discarded(reason) as f64);
    }
    for m in PER_ENDPOINT {
        describe(&r, m.name, m.kind, m.unit, m.help);
        for e in &s.endpoints {
            let Some(v) = (m.value)(e) else { continue };
            let listener = s
                .listeners
                .get(e.listener)
                .map(|l| l.name.clone())
                .unwrap_or_default();
            let labels = vec![
                Label::new("listener", listener),
                Label::new("endpoint", e.addr.to_string()),
            ];
            set(&r, m.kind, Key::from_parts(m.name, labels), v);
        }
    }
    describe(
        &r,
        "sssonector_listener_bound",
        Kind::Gauge,
        None,
        "1 while the listener accepts connections; 0 once a drain closed it.",
    );
    for l in &s.listeners {
        let key = Key::from_parts(
            "sssonector_listener_bound",
            vec![Label::new("listener", l.name.clone())],
        );
        set(&r, Kind::Gauge, key, f64::from(u8::from(l.bound)));
    }
    describe(
        &r,
        "sssonector_worker_heartbeat_age_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Seconds since the worker's loop last published (every 100 ms while it turns).",
    );
    // A worker that finished (drained) has no heartbeat series.
    for (i, age) in s.heartbeat_age_ms.iter().enumerate() {
        let Some(age) = age else { continue };
        let key = Key::from_parts(
            "sssonector_worker_heartbeat_age_seconds",
            vec![Label::new("worker", i.to_string())],
        );
        set(&r, Kind::Gauge, key, *age as f64 / 1000.0);
    }
    let mut out = r.handle().render();
    for h in HISTOGRAMS {
        render_histogram(&mut out, h.name, h.help, (h.of)(&s.histograms));
    }
    out
}

/// A histogram kept in milliseconds, exposed in seconds with cumulative buckets.
fn render_histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in h.bounds_ms.iter().zip(&h.counts) {
        cumulative += count;
        let le = *bound as f64 / 1000.0;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", h.sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "{name}_count {}", h.count());
    out.push('\n');
}

/// The totals a window is the difference of.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    connect_errors: u64,
    probes_failed: u64,
    allocations: u64,
}

impl Mark {
    fn of(s: &StatsSnapshot, at: Instant) -> Mark {
        Mark {
            at,
            connect_errors: s.total.upstream_connect_errors,
            probes_failed: s.health_check_failures,
            allocations: s.total.buffer_allocations,
        }
    }
}

/// Closes a [`Window`] each time [`WindowSampler::sample`] is called (every
/// `metrics_interval`, by the admin server's sampler thread).
#[derive(Debug, Default)]
pub struct WindowSampler {
    state: Mutex<(Option<Mark>, Window)>,
}

impl WindowSampler {
    pub fn sample(&self, s: &StatsSnapshot, now: Instant) {
        let mark = Mark::of(s, now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = state.0 {
            let secs = now.saturating_duration_since(prev.at).as_secs_f64();
            state.1 = Window {
                connect_errors: mark.connect_errors.saturating_sub(prev.connect_errors),
                health_check_failures: mark.probes_failed.saturating_sub(prev.probes_failed),
                allocations_per_sec: if secs > 0.0 {
                    mark.allocations.saturating_sub(prev.allocations) as f64 / secs
                } else {
                    0.0
                },
            };
        }
        state.0 = Some(mark);
    }

    /// The last closed window (all zero before the first one closes).
    pub fn last(&self) -> Window {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

/// How long the sampler sleeps between looks at the stop flag.
pub const SAMPLER_POLL: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_rendered_once_with_help_and_type() {
        let out = render(&StatsSnapshot::default(), &Window::default());
        for name in [
            "sssonector_pool_active_connections",
            "sssonector_pool_idle_connections",
            "sssonector_pool_connection_errors",
            "sssonector_pool_health_check_failures",
            "sssonector_buffer_pool_size",
            "sssonector_buffer_pool_utilization",
            "sssonector_buffer_allocation_rate",
            "sssonector_connection_errors_total",
            "sssonector_connection_timeouts_total",
            "sssonector_health_check_failures_total",
        ] {
            assert_eq!(
                out.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}\n{out}"
            );
            assert_eq!(out.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
            assert!(
                out.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name}"
            );
        }
    }

    #[test]
    fn pool_discards_come_from_the_shared_pool_one_reason_each() {
        let mut s = StatsSnapshot::default();
        s.pool.idle = 7;
        s.pool.discarded[Discard::Flushed as usize] = 3;
        let out = render(&s, &Window::default());
        assert!(
            out.contains("\nsssonector_pool_idle_connections 7\n"),
            "{out}"
        );
        for reason in Discard::ALL {
            let want = if reason == Discard::Flushed { 3 } else { 0 };
            let line = format!(
                "sssonector_pool_discarded_total{{reason=\"{}\"}} {want}\n",
                reason.as_str()
            );
            assert!(out.contains(&line), "{line}{out}");
        }
    }

    #[test]
    fn failed_probes_count_endpoints_no_longer_shown() {
        // A reload retired the failing endpoint: `endpoints` no longer lists it.
        let s = StatsSnapshot {
            health_check_failures: 7,
            ..StatsSnapshot::default()
        };
        let out = render(&s, &Window::default());
        assert!(
            out.contains("\nsssonector_health_check_failures_total 7\n"),
            "{out}"
        );
        let sampler = WindowSampler::default();
        let t0 = Instant::now();
        sampler.sample(&s, t0);
        sampler.sample(&s, t0 + Duration::from_secs(1));
        assert_eq!(sampler.last().health_check_failures, 0);
    }

    #[test]
    fn names_are_unique() {
        let mut names = metric_names();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn a_window_is_the_difference_of_two_samples() {
        let sampler = WindowSampler::default();
        let mut s = StatsSnapshot::default();
        let t0 = Instant::now();
        sampler.sample(&s, t0);
        assert_eq!(sampler.last(), Window::default());
        s.total.upstream_connect_errors = 3;
        s.total.buffer_allocations = 500;
        sampler.sample(&s, t0 + Duration::from_secs(2));
        let w = sampler.last();
        assert_eq!(w.connect_errors, 3);
        assert!((w.allocations_per_sec - 250.0).abs() < 1e-9);
        sampler.sample(&s, t0 + Duration::from_secs(4));
        assert_eq!(
            sampler.last().connect_errors,
            0,
            "nothing new in the next window"
        );
    }
}
