//! The status page at `/`: one self-refreshing HTML page, no script, no external asset,
//! in the spirit of HAProxy's stats page.

use std::fmt::Write;
use std::time::Duration;

use crate::metrics::StatsSnapshot;

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u32 = 2;

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.2em}\
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}\
th{background:#eee}td.l,th.l{text-align:left}\
.up{background:#c8f0c8}.down{background:#f4c0c0}.warn{background:#f8e8a0}";

pub fn render(s: &StatsSnapshot, metrics_interval: Duration) -> String {
    let t = &s.total;
    let mut h = String::with_capacity(4096);
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>sssonector status</title><style>{STYLE}</style></head><body>\
         <h1>sssonector</h1><p id=\"state\">{} &middot; {} workers &middot; \
         counters published every 100 ms, interval gauges over {:?} &middot; \
         <a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a> \
         <a href=\"/readyz\">/readyz</a></p>",
        if s.draining { "DRAINING" } else { "running" },
        s.per_worker.len(),
        metrics_interval,
    );

    h.push_str("<h2>Listeners</h2><table id=\"listeners\"><tr><th class=\"l\">name</th><th class=\"l\">address</th><th>state</th></tr>");
    for l in &s.listeners {
        let (class, state) = if l.bound {
            ("up", "LISTEN")
        } else {
            ("down", "CLOSED")
        };
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"{class}\">{state}</td></tr>",
            esc(&l.name),
            l.addr
        );
    }
    h.push_str("</table>");

    h.push_str(
        "<h2>Endpoints</h2><table id=\"endpoints\"><tr><th class=\"l\">listener</th>\
         <th class=\"l\">endpoint</th><th>status</th><th>active</th><th>idle</th>\
         <th>sessions</th><th>bytes to / from</th>\
         <th>connect errors</th><th>failed checks</th><th>last check</th></tr>",
    );
    for e in &s.endpoints {
        let listener = s
            .listeners
            .get(e.listener)
            .map(|l| l.name.as_str())
            .unwrap_or("");
        let (class, status) = match (e.retired, e.up) {
            (true, _) => ("warn", "RETIRED"),
            (false, true) => ("up", "UP"),
            (false, false) => ("down", "DOWN"),
        };
        let last = match e.last_probe {
            Some((age_ms, ok)) => format!(
                "{:.1} s ago, {}",
                age_ms as f64 / 1000.0,
                if ok { "passed" } else { "failed" }
            ),
            None => "none yet".to_string(),
        };
        let _ = write!(
            h,
            "<tr data-endpoint=\"{addr}\"><td class=\"l\">{}</td><td class=\"l\">{addr}</td>\
             <td class=\"{class}\">{status}</td><td class=\"active\">{}</td><td class=\"idle\">{}</td>\
             <td class=\"sessions\">{}</td><td class=\"bytes\">{} / {}</td>\
             <td class=\"errors\">{}</td><td class=\"checks\">{}</td><td>{}</td></tr>",
            esc(listener),
            e.active,
            e.idle,
            e.sessions_total,
            e.bytes_to,
            e.bytes_from,
            e.connect_errors,
            e.probes_failed,
            esc(&last),
            addr = e.addr,
        );
    }
    h.push_str("</table>");

    let row = |h: &mut String, name: &str, id: &str, value: String| {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{name}</td><td id=\"{id}\">{value}</td></tr>"
        );
    };
    h.push_str("<h2>Sessions and admission</h2><table id=\"sessions\">");
    row(
        &mut h,
        "active sessions",
        "sessions-active",
        t.sessions_active.to_string(),
    );
    row(
        &mut h,
        "accepted",
        "sessions-accepted",
        t.sessions_total.to_string(),
    );
    row(
        &mut h,
        "closed",
        "sessions-closed",
        t.sessions_closed.to_string(),
    );
    row(
        &mut h,
        "holding a max_active slot",
        "admitted",
        s.admitted.to_string(),
    );
    row(
        &mut h,
        "waiting in the admission queue",
        "queue-length",
        s.queued.to_string(),
    );
    row(
        &mut h,
        "queued (total)",
        "queued-total",
        t.queued_total.to_string(),
    );
    row(
        &mut h,
        "queue timeouts",
        "queue-timeouts",
        t.queue_timeouts.to_string(),
    );
    row(
        &mut h,
        "rejected, queue full",
        "queue-rejected",
        t.queue_rejected.to_string(),
    );
    row(
        &mut h,
        "pool hits / misses",
        "pool-hits-misses",
        format!("{} / {}", t.pool_hits, t.pool_misses),
    );
    row(
        &mut h,
        "idle pooled connections",
        "pool-idle",
        s.pool.idle.to_string(),
    );
    row(
        &mut h,
        "pool dials in flight / idle discarded",
        "pool-dialing-discarded",
        format!(
            "{} / {}",
            s.pool.dialing,
            s.pool.discarded.iter().sum::<u64>()
        ),
    );
    row(
        &mut h,
        "bytes client &rarr; upstream / upstream &rarr; client",
        "bytes",
        format!(
            "{} / {}",
            t.bytes_client_to_upstream, t.bytes_upstream_to_client
        ),
    );
    h.push_str("</table>");

    h.push_str("<h2>Buffers</h2><table id=\"buffers\">");
    row(
        &mut h,
        "slots (pool size)",
        "buffer-slots",
        t.buffer_slots_total.to_string(),
    );
    row(
        &mut h,
        "slots in use",
        "buffer-in-use",
        t.buffer_slots_in_use.to_string(),
    );
    row(
        &mut h,
        "slots in use, high-water mark",
        "buffer-in-use-max",
        t.buffer_slots_in_use_max.to_string(),
    );
    row(
        &mut h,
        "checkouts (total)",
        "buffer-allocations",
        t.buffer_allocations.to_string(),
    );
    row(
        &mut h,
        "waits for a free slot",
        "buffer-waits",
        t.buffer_waits.to_string(),
    );
    row(&mut h, "data plane", "data-plane", s.data_plane.to_string());
    row(
        &mut h,
        "registered with io_uring",
        "buffer-registered",
        if s.buffers_registered {
            "yes"
        } else {
            "no (plain sends)"
        }
        .to_string(),
    );
    h.push_str("</table>");

    h.push_str("<h2>Workers</h2><table id=\"workers\"><tr><th>worker</th><th>sessions</th><th>last loop turn</th></tr>");
    for (i, w) in s.per_worker.iter().enumerate() {
        let (class, turn) = match s.heartbeat_age_ms.get(i).copied().flatten() {
            Some(age) if age > super::routes::HEARTBEAT_STALE_MS => {
                ("down", format!("{age} ms ago"))
            }
            Some(age) => ("up", format!("{age} ms ago")),
            None => ("warn", "finished".to_string()),
        };
        let _ = write!(
            h,
            "<tr><td>{i}</td><td>{}</td><td class=\"{class}\">{turn}</td></tr>",
            w.sessions_active
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_break_the_page() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn renders_a_complete_page() {
        let page = render(&StatsSnapshot::default(), Duration::from_secs(60));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(page.trim_end().ends_with("</html>"));
        assert!(!page.contains("src="), "no external assets");
    }
}
