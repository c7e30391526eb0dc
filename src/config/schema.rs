//! The keys the config structs accept, taken from the structs themselves (a config with
//! one listener, serialized), for three uses: suggestions for a misspelt or misplaced
//! key, the comments of `check`'s effective configuration, and the test that compares
//! the keys documented in `docs/configuration.md` with the code.
//!
//! Paths are dotted; the items of a list of mappings are written `[]`:
//! `listeners[].listen`, `connection.pool.max_idle`.

use super::{Config, ListenerConfig};

/// Every key path the config accepts, parents before their children.
pub fn key_paths() -> Vec<String> {
    let sample = Config {
        listeners: vec![ListenerConfig {
            name: "a".into(),
            listen: super::DEFAULT_ADMIN_LISTEN,
            upstreams: vec!["a:1".into()],
            resolved: Vec::new(),
        }],
        ..Config::default()
    };
    let mut out = Vec::new();
    if let Ok(value) = serde_yaml::to_value(&sample) {
        walk(&value, "", &mut out);
    }
    out
}

fn walk(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let Some(k) = k.as_str() else { continue };
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                walk(v, &path, out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            if let Some(first) = items.first().filter(|v| v.is_mapping()) {
                walk(first, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// `listeners[2].upstreams[0]` -> `listeners[].upstreams[]`: a path without its indices.
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The parent of a normalized path (`""` for a top-level key) and its last key.
fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The keys allowed directly under `parent` (a normalized path, `""` for the top level).
pub fn children(parent: &str) -> Vec<String> {
    key_paths()
        .into_iter()
        .filter_map(|p| {
            let (pp, last) = split_last(&p);
            (pp == parent).then(|| last.to_string())
        })
        .collect()
}

/// A hint for an unknown key `field` under `parent`: the closest valid key there, or the
/// place where a key of that name belongs.
pub fn suggest(parent: &str, field: &str) -> Option<String> {
    let parent = normalize(parent);
    let here = children(&parent);
    if let Some(best) = closest(field, here.iter().map(String::as_str)) {
        return Some(format!("did you mean `{best}`?"));
    }
    let all = key_paths();
    let elsewhere: Vec<&String> = all
        .iter()
        .filter(|p| split_last(p).1 == field && split_last(p).0 != parent)
        .collect();
    let place = if parent.is_empty() {
        "at the top level".to_string()
    } else {
        format!("directly under `{parent}`")
    };
    if !elsewhere.is_empty() {
        let list: Vec<String> = elsewhere.iter().map(|p| format!("`{p}`")).collect();
        return Some(format!(
            "`{field}` does not go {place}: did you mean {}?",
            or_list(&list)
        ));
    }
    let leaves: Vec<(&str, &String)> = all.iter().map(|p| (split_last(p).1, p)).collect();
    let best = closest(field, leaves.iter().map(|(l, _)| *l))?;
    let path = leaves.iter().find(|(l, _)| *l == best).map(|(_, p)| *p)?;
    Some(format!("did you mean `{path}`?"))
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The candidate nearest to `word` (edit distance with transpositions) if it is near
/// enough to be a slip: at most 2 edits, and fewer than half the word's length.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = 2.min(word.chars().count().saturating_sub(1) / 2).max(1);
    candidates
        .map(|c| (edit_distance(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// neighbours each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// What each key means, as `check` prints it next to the key.
pub fn comment(path: &str) -> Option<&'static str> {
    COMMENTS.iter().find(|(p, _)| *p == path).map(|(_, c)| *c)
}

const COMMENTS: &[(&str, &str)] = &[
    ("listeners", "what to accept and where to send it"),
    ("listeners[].name", "unique; used in logs and metric labels"),
    (
        "listeners[].listen",
        "ip:port, [ipv6]:port, :port (every IPv4 address) or host:port; port 0: any free port",
    ),
    (
        "listeners[].upstreams",
        "host:port endpoints, resolved at load",
    ),
    ("workers", "`auto` (one per CPU) or 1..1024"),
    (
        "data_plane",
        "`auto` (io_uring, else epoll with a warning), `io_uring` or `epoll`",
    ),
    ("connection", "the spec's section"),
    (
        "connection.pool",
        "warm upstream connections, the active limit, dialing",
    ),
    (
        "connection.pool.enabled",
        "false: every session dials its own upstream connection",
    ),
    (
        "connection.pool.idle_timeout",
        "an idle pooled connection older than this is closed",
    ),
    (
        "connection.pool.max_idle",
        "total idle upstream connections the proxy keeps, over all endpoints and workers",
    ),
    (
        "connection.pool.max_active",
        "active sessions in all; more clients wait in a queue",
    ),
    (
        "connection.pool.retry_interval",
        "wait before a new round of dial attempts",
    ),
    (
        "connection.pool.max_retries",
        "redials after the first failed connect",
    ),
    ("connection.pool.connect_timeout", "one dial attempt"),
    (
        "connection.pool.queue_timeout",
        "longest wait for a slot under max_active",
    ),
    (
        "connection.pool.max_queued",
        "clients that may wait at once; more are closed",
    ),
    ("connection.pool.balance", "round_robin | least_active"),
    ("connection.session", "client sessions"),
    (
        "connection.session.idle_timeout",
        "a session with no traffic either way for this long is closed; 0: never",
    ),
    (
        "connection.session.send_timeout",
        "a session whose peer takes no byte for this long while data waits is closed; 0: never",
    ),
    ("connection.health_check", "the endpoint prober"),
    (
        "connection.health_check.enabled",
        "false: no probes, every endpoint stays eligible",
    ),
    (
        "connection.health_check.interval",
        "time between probes of an endpoint",
    ),
    (
        "connection.health_check.timeout",
        "one probe (a TCP connect); shorter than interval",
    ),
    (
        "connection.health_check.rise",
        "successes that mark a down endpoint up",
    ),
    (
        "connection.health_check.fall",
        "failures that mark an up endpoint down",
    ),
    (
        "connection.buffer",
        "each worker maps ceil(max_pool_size / workers) buffers",
    ),
    ("connection.buffer.size", "bytes per buffer, 4096..1048576"),
    (
        "connection.buffer.max_pool_size",
        "buffers in all, split over the workers",
    ),
    (
        "connection.buffer.max_in_flight",
        "buffers one direction of a session may hold, 1..16",
    ),
    (
        "connection.buffer.send_mode",
        "auto | send | fixed | zerocopy",
    ),
    (
        "connection.monitoring",
        "the metrics and the admin HTTP server",
    ),
    (
        "connection.monitoring.enabled",
        "false: /metrics answers 404; /healthz, /readyz and / stay on",
    ),
    (
        "connection.monitoring.metrics_interval",
        "window of the interval gauges (errors, failed checks, allocation rate)",
    ),
    (
        "connection.monitoring.listen",
        "admin HTTP: /metrics /healthz /readyz and a status page at /; --admin-listen",
    ),
    ("shutdown", "the drain on SIGTERM/SIGINT"),
    (
        "shutdown.drain_delay",
        "listeners keep accepting this long while /readyz fails",
    ),
    (
        "shutdown.grace_period",
        "then sessions in flight have this long to finish",
    ),
];

/// Puts each key's comment after it in `yaml` as serde_yaml prints a config (two-space
/// indentation, lists of mappings at their key's indentation).
pub fn annotate(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() * 2);
    // (column, segment); an item of a list is the segment "[]".
    let mut stack: Vec<(usize, String)> = Vec::new();
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut rest = &line[indent..];
        let mut col = indent;
        if let Some(item) = rest.strip_prefix("- ") {
            while stack
                .last()
                .is_some_and(|(c, s)| *c > indent || (*c == indent && s == "[]"))
            {
                stack.pop();
            }
            stack.push((indent, "[]".into()));
            col = indent + 2;
            rest = item;
        }
        let key = rest
            .find(':')
            .filter(|&i| rest[i + 1..].is_empty() || rest[i + 1..].starts_with(' '))
            .map(|i| &rest[..i]);
        let Some(key) = key else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        // A key closes everything at its column or deeper (an item's dash sits left of
        // its keys, so it stays).
        while stack.last().is_some_and(|(c, _)| *c >= col) {
            stack.pop();
        }
        stack.push((col, key.to_string()));
        let mut path = String::new();
        for (_, seg) in &stack {
            if seg == "[]" {
                path.push_str("[]");
            } else {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(seg);
            }
        }
        out.push_str(line);
        if let Some(c) = comment(&path) {
            let pad = 40usize.saturating_sub(line.chars().count()).max(1);
            out.push_str(&" ".repeat(pad));
            out.push_str("# ");
            out.push_str(c);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_the_structs() {
        let paths = key_paths();
        for want in [
            "listeners",
            "listeners[].listen",
            "workers",
            "connection.pool.max_idle",
            "connection.session.idle_timeout",
            "connection.monitoring.listen",
            "shutdown.drain_delay",
            "shutdown.grace_period",
        ] {
            assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.contains("resolved")));
    }

    #[test]
    fn every_key_has_a_comment_and_every_comment_a_key() {
        let paths = key_paths();
        for p in &paths {
            assert!(comment(p).is_some(), "no comment for {p}");
        }
        for (p, _) in COMMENTS {
            assert!(paths.iter().any(|k| k == p), "comment for unknown key {p}");
        }
    }

    #[test]
    fn suggestions() {
        let s = |parent, field| suggest(parent, field).unwrap_or_default();
        assert_eq!(s("connection.pool", "max_idel"), "did you mean `max_idle`?");
        assert_eq!(s("", "listners"), "did you mean `listeners`?");
        assert_eq!(s("listeners[0]", "upstream"), "did you mean `upstreams`?");
        assert!(s("connection", "max_active").contains("`connection.pool.max_active`"));
        assert!(s("", "pool").contains("`connection.pool`"));
        let e = s("connection", "enabled");
        assert!(e.contains("`connection.pool.enabled`, "), "{e}");
        assert!(e.contains(" or `connection.monitoring.enabled`"), "{e}");
        assert!(s("connection.pool", "helth_check").contains("`connection.health_check`"));
        assert_eq!(suggest("connection.pool", "zzzzzz"), None);
    }

    #[test]
    fn annotates_nested_keys_and_list_items() {
        let yaml = "listeners:\n- name: a\n  listen: 1.2.3.4:1\n  upstreams:\n  - a:1\n- name: b\nworkers: 2\nconnection:\n  pool:\n    max_idle: 1\n";
        let out = annotate(yaml);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].ends_with("# unique; used in logs and metric labels"),
            "{out}"
        );
        assert!(
            lines[3].ends_with("# host:port endpoints, resolved at load"),
            "{out}"
        );
        assert!(!lines[4].contains('#'), "{out}");
        assert!(lines[5].contains("# unique"), "{out}");
        assert!(lines[6].contains("# `auto`"), "{out}");
        assert!(
            lines[9].contains("# total idle upstream connections"),
            "{out}"
        );
    }
}
