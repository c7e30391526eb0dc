//! Bad configurations through `sssonector check`: each exits 2 (never 1 or a panic) and
//! names the key path, the line, and what was written, in words without Rust types.
//! Also bad flags, busy listen addresses and buffer pools the workers cannot map.

mod support;

use std::net::TcpListener;

use support::{check_file, sssonector, temp_config};

/// The standard listener; it takes lines 1-5, so `connection:` is line 6, a section
/// line 7 and its first key line 8.
const LISTENER: &str = "\
listeners:
  - name: test
    listen: 127.0.0.1:8443
    upstreams:
      - 127.0.0.1:9000
";

const TWO: &str = "\
listeners:
  - name: a
    listen: 127.0.0.1:8443
    upstreams: [127.0.0.1:9000]
  - name: b
    listen: 127.0.0.1:8444
    upstreams: [127.0.0.1:9001]
";

/// Words that give away a Rust type or serde's vocabulary.
const RUST_WORDS: &[&str] = &[
    "usize",
    "isize",
    "u8",
    "u16",
    "u32",
    "u64",
    "i8",
    "i16",
    "i32",
    "i64",
    "f32",
    "f64",
    "struct",
    "enum",
    "variant",
    "Option",
    "Duration",
    "Vec",
    "SocketAddr",
    "String",
    "PoolConfig",
    "internal",
    "panicked",
];

/// Whole-word occurrences of a Rust word in `text`.
fn rust_words(text: &str) -> Vec<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    RUST_WORDS
        .iter()
        .filter(|w| words.contains(w))
        .copied()
        .collect()
}

/// A bad configuration: the file, the key (or `YAML syntax error`) and line stderr must
/// name, the offending value as the message quotes it, and more words it must contain.
struct Bad {
    what: &'static str,
    text: String,
    key: &'static str,
    line: usize,
    value: &'static str,
    also: &'static [&'static str],
}

fn bad(
    what: &'static str,
    text: &str,
    key: &'static str,
    line: usize,
    value: &'static str,
    also: &'static [&'static str],
) -> Bad {
    Bad {
        what,
        text: text.to_string(),
        key,
        line,
        value,
        also,
    }
}

/// A case whose text is the standard listener plus `rest`.
fn after_listener(
    what: &'static str,
    rest: &str,
    key: &'static str,
    line: usize,
    value: &'static str,
    also: &'static [&'static str],
) -> Bad {
    bad(what, &format!("{LISTENER}{rest}"), key, line, value, also)
}

fn listen_case(
    what: &'static str,
    listen: &str,
    value: &'static str,
    also: &'static [&'static str],
) -> Bad {
    bad(
        what,
        &format!(
            "listeners:\n  - name: a\n    listen: {listen}\n    upstreams: [127.0.0.1:9000]\n"
        ),
        "listeners[0].listen",
        3,
        value,
        also,
    )
}

fn cases() -> Vec<Bad> {
    let pool = |what, body: &str, key, line, value, also| {
        after_listener(
            what,
            &format!("connection:\n  pool:\n{body}"),
            key,
            line,
            value,
            also,
        )
    };
    let section = |what, section: &str, body: &str, key, line, value, also| {
        after_listener(
            what,
            &format!("connection:\n  {section}:\n{body}"),
            key,
            line,
            value,
            also,
        )
    };
    vec![
        // Keys: misspelt, at the wrong level, unknown.
        pool("misspelt pool key", "    max_idel: 5\n", "connection.pool.max_idel", 8, "max_idel", &["did you mean `max_idle`?"]),
        after_listener("pool key directly under connection", "connection:\n  max_active: 5\n", "connection.max_active", 7, "max_active", &["did you mean `connection.pool.max_active`?"]),
        after_listener("pool section at the top level", "pool:\n  max_idle: 3\n", "pool", 6, "pool", &["did you mean `connection.pool`?"]),
        after_listener("misspelt section", "connection:\n  helth_check:\n    interval: 5s\n", "connection.helth_check", 7, "helth_check", &["did you mean `health_check`?"]),
        bad("misspelt top-level key", "listners: []\n", "listners", 1, "listners", &["did you mean `listeners`?"]),
        bad("misspelt listener key", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: [127.0.0.1:2]\n", "listeners[0].upstream", 4, "upstream", &["did you mean `upstreams`?"]),
        section("misspelt session key", "session", "    idle_timout: 5m\n", "connection.session.idle_timout", 8, "idle_timout", &["did you mean `idle_timeout`?"]),
        bad("missing listen", "listeners:\n  - name: a\n    upstreams: [127.0.0.1:2]\n", "listeners[0].listen", 2, "`listen`", &["required"]),
        // Whole numbers.
        section("size with a unit", "buffer", "    size: 64KB\n", "connection.buffer.size", 8, "64KB", &["a whole number of bytes (e.g. 65536)", "write 65536"]),
        section("negative size", "buffer", "    size: -1\n", "connection.buffer.size", 8, "-1", &["whole number of bytes"]),
        pool("max_active -1 for unlimited", "    max_active: -1\n", "connection.pool.max_active", 8, "-1", &["no \"unlimited\""]),
        pool("max_idle -1", "    max_idle: -1\n", "connection.pool.max_idle", 8, "-1", &["no \"unlimited\""]),
        pool("max_retries -1", "    max_retries: -1\n", "connection.pool.max_retries", 8, "-1", &["no \"unlimited\""]),
        pool("fractional max_queued", "    max_queued: 1.5\n", "connection.pool.max_queued", 8, "1.5", &["a non-negative whole number"]),
        pool("exponent for a number", "    max_active: 1e3\n", "connection.pool.max_active", 8, "1000.0", &["no fractions or exponents"]),
        pool("number past YAML's integers", "    max_active: 99999999999999999999999\n", "YAML syntax error", 8, "99999999999999999999999", &["too large"]),
        pool("number past the key's range", "    max_retries: 5000000000\n", "connection.pool.max_retries", 8, "5000000000", &["the largest value is 4294967295"]),
        pool("key without a value", "    max_active:\n", "connection.pool.max_active", 8, "nothing", &["the key has no value"]),
        pool("quoted number", "    max_active: \"1000\"\n", "connection.pool.max_active", 8, "1000", &["without quotes"]),
        section("word for a number", "buffer", "    max_in_flight: four\n", "connection.buffer.max_in_flight", 8, "four", &["a non-negative whole number"]),
        section("negative rise", "health_check", "    rise: -3\n", "connection.health_check.rise", 8, "-3", &["negative"]),
        section("buffer too small", "buffer", "    size: 100\n", "connection.buffer.size", 8, "100", &["4096..1048576"]),
        section("buffer too large", "buffer", "    size: 2097152\n", "connection.buffer.size", 8, "2097152", &["4096..1048576"]),
        section("max_pool_size 0", "buffer", "    max_pool_size: 0\n", "connection.buffer.max_pool_size", 8, "got 0", &[]),
        section("max_in_flight out of range", "buffer", "    max_in_flight: 17\n", "connection.buffer.max_in_flight", 8, "17", &["1..16"]),
        // What the workers can map.
        after_listener("more buffers than a worker can map", "workers: 2\nconnection:\n  buffer:\n    max_pool_size: 100000\n", "connection.buffer.max_pool_size", 9, "100000", &["50000 per worker", "32768", "workers"]),
        after_listener("buffers beyond the machine's memory", "workers: 1024\nconnection:\n  buffer:\n    size: 1048576\n    max_pool_size: 33554432\n", "connection.buffer.max_pool_size", 10, "33554432", &["32768.0 GiB", "machine's memory"]),
        // Words and booleans.
        section("unknown send_mode", "buffer", "    send_mode: turbo\n", "connection.buffer.send_mode", 8, "turbo", &["`auto`, `send`, `fixed`, `zerocopy`"]),
        pool("unknown balance", "    balance: random\n", "connection.pool.balance", 8, "random", &["`round_robin`, `least_active`"]),
        pool("yes for true", "    enabled: yes\n", "connection.pool.enabled", 8, "yes", &["write `true`"]),
        section("number for a boolean", "health_check", "    enabled: 1\n", "connection.health_check.enabled", 8, "1", &["`true` or `false`"]),
        after_listener("scalar for a section", "connection:\n  pool: yes\n", "connection.pool", 7, "yes", &["a mapping expected"]),
        // Cross-key rules.
        pool("max_idle above max_active", "    max_idle: 2000\n    max_active: 1000\n", "connection.pool.max_idle", 8, "2000", &["must not exceed", "total of idle upstream connections"]),
        pool("max_active below the default max_idle", "    max_active: 50\n", "connection.pool.max_active", 8, "50", &["max_idle (100, the default)"]),
        pool("max_active 0", "    max_idle: 0\n    max_active: 0\n", "connection.pool.max_active", 9, "got 0", &[]),
        section("health timeout not below interval", "health_check", "    interval: 2s\n    timeout: 5s\n", "connection.health_check.timeout", 9, "5s", &["shorter than", "2s"]),
        section("health rise 0", "health_check", "    rise: 0\n", "connection.health_check.rise", 8, "got 0", &[]),
        // Durations.
        pool("zero pool idle_timeout", "    idle_timeout: 0s\n", "connection.pool.idle_timeout", 8, "got 0", &["non-zero", "max_idle: 0"]),
        pool("unknown unit", "    retry_interval: 5x\n", "connection.pool.retry_interval", 8, "5x", &["valid units: ns, us (or µs), ms, s, m, h"]),
        section("duration without a unit", "health_check", "    interval: 30\n", "connection.health_check.interval", 8, "30", &["a unit is required"]),
        pool("M for minutes", "    idle_timeout: 5M\n", "connection.pool.idle_timeout", 8, "5M", &["write `m` for minutes"]),
        section("day unit", "session", "    idle_timeout: 1d\n", "connection.session.idle_timeout", 8, "1d", &["no day unit; write 24h"]),
        section("year unit", "session", "    idle_timeout: 1y\n", "connection.session.idle_timeout", 8, "1y", &["write 8760h"]),
        section("space inside a duration", "health_check", "    interval: 1m 30s\n", "connection.health_check.interval", 8, "1m 30s", &["no spaces"]),
        section("long unit name", "health_check", "    timeout: 5sec\n", "connection.health_check.timeout", 8, "5sec", &["write `s`"]),
        pool("negative duration", "    connect_timeout: -5s\n", "connection.pool.connect_timeout", 8, "-5s", &["negative"]),
        section("negative session timeout", "session", "    idle_timeout: -1\n", "connection.session.idle_timeout", 8, "-1", &["negative"]),
        pool("duration past Go's maximum", "    queue_timeout: 3000000h\n", "connection.pool.queue_timeout", 8, "3000000h", &["too long"]),
        section("zero metrics_interval", "monitoring", "    metrics_interval: 0ms\n", "connection.monitoring.metrics_interval", 8, "got 0", &["non-zero"]),
        // Addresses.
        section("admin address on a listener's port", "monitoring", "    listen: 127.0.0.1:8443\n", "connection.monitoring.listen", 8, "127.0.0.1:8443", &["overlaps listener `test`"]),
        listen_case("listener on the default admin port", "0.0.0.0:9090", "0.0.0.0:9090", &["default admin address 127.0.0.1:9090", "connection.monitoring.listen: 127.0.0.1:9091"]),
        listen_case("listen without a port", "localhost", "`localhost`", &["the port is missing"]),
        listen_case("listen as a port alone", "8443", "`8443`", &["write `:8443`", "`127.0.0.1:8443`"]),
        listen_case("listen port out of range", "\":99999\"", "99999", &["0..65535"]),
        listen_case("IPv6 listen without brackets", "\"::1:8443\"", "`::1:8443`", &["brackets"]),
        listen_case("listen with a bad host", "\"web server:80\"", "`web server:80`", &["neither an IP address nor a host name"]),
        bad("unquoted * listen", "listeners:\n  - name: a\n    listen: *:8443\n    upstreams: [127.0.0.1:9000]\n", "YAML syntax error", 3, "`    listen: *:8443`", &["quote the value"]),
        bad("upstream without port", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1\n", "listeners[0].upstreams[0]", 5, "`127.0.0.1`", &["host:port"]),
        bad("upstream port 0", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1:2\n      - 127.0.0.1:0\n", "listeners[0].upstreams[1]", 6, "`127.0.0.1:0`", &["port 1..65535"]),
        bad("upstream as a port number", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams: 9000\n", "listeners[0].upstreams", 4, "`9000`", &["host:port"]),
        bad("unresolvable upstream", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - no-such-host.invalid:80\n", "listeners[0].upstreams[0]", 5, "no-such-host.invalid:80", &["cannot resolve"]),
        bad("duplicate upstream", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1:2\n      - 127.0.0.1:2\n", "listeners[0].upstreams[1]", 6, "`127.0.0.1:2`", &["duplicate"]),
        // `127.1` is 127.0.0.1 to getaddrinfo (inet_aton), with no DNS involved.
        bad("two spellings of one upstream", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1:2\n      - 127.1:2\n", "listeners[0].upstreams[1]", 6, "`127.1:2`", &["duplicate", "`127.0.0.1:2` (upstreams[0])", "resolve to 127.0.0.1:2"]),
        bad("duplicate listener name", &TWO.replace("name: b", "name: a"), "listeners[1].name", 5, "`a`", &["duplicate"]),
        bad("duplicate listen address", &TWO.replace("8444", "8443"), "listeners[1].listen", 6, "127.0.0.1:8443", &["overlaps listener `a`"]),
        bad("wildcard listen overlap", &TWO.replace("127.0.0.1:8444", "\":8443\""), "listeners[1].listen", 6, "0.0.0.0:8443", &["overlaps listener `a`"]),
        bad("name with a space", "listeners:\n  - name: my proxy\n    listen: 127.0.0.1:1\n    upstreams: [127.0.0.1:2]\n", "listeners[0].name", 2, "`my proxy`", &["A-Z a-z 0-9 _ . -"]),
        bad("empty name", "listeners:\n  - name: \"\"\n    listen: 127.0.0.1:1\n    upstreams: [127.0.0.1:2]\n", "listeners[0].name", 2, "\"\"", &["non-empty"]),
        bad("no upstreams", "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams: []\n", "listeners[0].upstreams", 4, "an empty list", &[]),
        // Workers.
        after_listener("workers 0", "workers: 0\n", "workers", 6, "got 0", &["1..1024"]),
        after_listener("workers too many", "workers: 5000\n", "workers", 6, "5000", &["1..1024"]),
        after_listener("workers word", "workers: many\n", "workers", 6, "`many`", &["auto"]),
        after_listener("workers negative", "workers: -2\n", "workers", 6, "-2", &["1..1024"]),
        // YAML itself.
        after_listener("tab in indentation", "connection:\n  pool:\n\tmax_idle: 5\n", "YAML syntax error", 8, "`\\tmax_idle: 5`", &["tab characters are not allowed in YAML indentation; use spaces"]),
        bad("unclosed flow list", "listeners: [a\n", "YAML syntax error", 1, "`listeners: [a`", &[]),
        bad("duplicate key", "workers: 1\nworkers: 2\n", "YAML syntax error", 2, "`workers: 2`", &["duplicate"]),
        bad("top-level list", "- a\n- b\n", "(top level)", 1, "a list", &["mapping"]),
        bad("top-level scalar", "# c\nhello\n", "(top level)", 2, "`hello`", &["mapping"]),
    ]
}

#[test]
fn check_rejects_bad_configs_with_key_line_and_value() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let file = temp_config(&case.text);
        let out = check_file(file.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let at = format!("{} (line {})", case.key, case.line);
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        if !stderr.contains(&at) {
            problems.push(format!("no `{at}`"));
        }
        let message = stderr.split_once(&at).map_or("", |(_, m)| m);
        if !message.contains(case.value) {
            problems.push(format!("value `{}` not in the message", case.value));
        }
        for want in case.also {
            if !message.contains(want) {
                problems.push(format!("no `{want}`"));
            }
        }
        let words = rust_words(&stderr);
        if !words.is_empty() {
            problems.push(format!("Rust words {words:?}"));
        }
        if stderr.lines().count() != 1 {
            problems.push("not one line".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    {stderr}",
                case.what,
                problems.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Mistakes without a line to point at: an empty file, no listener.
#[test]
fn check_rejects_configs_without_a_line() {
    for (text, want) in [
        ("", "(top level): the configuration is empty"),
        ("# nothing\n\n", "(top level): the configuration is empty"),
        (
            "connection:\n  pool:\n    enabled: true\n",
            "listeners: at least one listener",
        ),
    ] {
        let file = temp_config(text);
        let out = check_file(file.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(want), "{text:?}: {stderr}");
        assert!(rust_words(&stderr).is_empty(), "{stderr}");
    }
}

#[test]
fn check_rejects_bad_flags() {
    let cases: &[(&[&str], &str)] = &[
        (&["check"], "listeners"),
        (
            &["check", "--listen", "nonsense", "--upstream", "127.0.0.1:1"],
            "--listen: `ip:port`, `[ipv6]:port`, `:port` (every IPv4 address) or `host:port` expected, got `nonsense`",
        ),
        (
            &["check", "--listen", "127.0.0.1:1", "--upstream", "nohost"],
            "--upstream",
        ),
        (&["check", "--upstream", "127.0.0.1:1"], "--upstream"),
        (
            &[
                "check",
                "--listen",
                "127.0.0.1:1",
                "--upstream",
                "127.0.0.1:2",
                "--workers",
                "0",
            ],
            "--workers",
        ),
        (
            &["check", "--config", "/nonexistent/sssonector.yaml"],
            "cannot read config file",
        ),
        (&["demo", "--duration", "5M"], "`M` is not minutes"),
    ];
    for (args, key) in cases {
        let out = sssonector(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: `{key}` not in {stderr}");
        assert!(rust_words(&stderr).is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn errors_name_the_file() {
    let file = temp_config("workers: 0\n");
    let out = check_file(file.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*file.path().to_string_lossy()), "{stderr}");
}

/// A listen address another process holds stops `check` and a start alike with exit 2,
/// the listener, its key and line, and the process holding it (this test).
#[test]
fn busy_listen_address_is_a_config_error_naming_the_holder() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr");
    let text = format!(
        "listeners:\n  - name: free\n    listen: 127.0.0.1:0\n    upstreams: [127.0.0.1:9]\n  - name: web\n    listen: {addr}\n    upstreams: [127.0.0.1:9]\n"
    );
    let file = temp_config(&text);
    let path = file.path().to_string_lossy().into_owned();
    let holder = format!("in use by process {}", std::process::id());
    for args in [vec!["check", "--config", &path], vec!["--config", &path]] {
        let out = sssonector(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for want in [
            "listeners[1].listen (line 6)",
            &format!("listener `web` cannot listen on {addr}"),
            &holder,
        ] {
            assert!(stderr.contains(want), "{args:?}: `{want}` not in {stderr}");
        }
        assert!(rust_words(&stderr).is_empty(), "{stderr}");
    }
    // The same from the flags names the flag.
    let flag = addr.to_string();
    let out = sssonector(&["check", "--listen", &flag, "--upstream", "127.0.0.1:9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen: listener `cli`"), "{stderr}");
    drop(held);
}

/// A bind that fails inside `start` (the port taken after the probe) is not "internal",
/// and the config turns it into the listener's key.
#[test]
fn bind_failure_at_start_is_reported_on_the_key() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr");
    let text =
        format!("listeners:\n  - name: web\n    listen: {addr}\n    upstreams: [127.0.0.1:9]\n");
    let config = sssonector::Config::parse(&text).expect("valid config");
    let err = match sssonector::start(config.clone()) {
        Ok(h) => {
            let _ = h.shutdown();
            panic!("bound a held port");
        }
        Err(e) => e,
    };
    let shown = err.to_string();
    assert!(!shown.contains("internal"), "{shown}");
    match err {
        sssonector::ProxyError::Bind {
            name,
            addr: a,
            source,
        } => {
            assert!(
                sssonector::config::is_bind_config_error(&source),
                "{source}"
            );
            let e = config.bind_error(&name, a, &source).to_string();
            assert!(
                e.starts_with("listeners[0].listen (line 3): listener `web`"),
                "{e}"
            );
            assert!(
                e.contains(&format!("process {}", std::process::id())),
                "{e}"
            );
        }
        other => panic!("{other}"),
    }
    drop(held);
}

/// The acceptance case of the issue: a pool a worker cannot map fails `check`, on the key.
#[test]
fn check_refuses_a_buffer_pool_the_workers_cannot_map() {
    let file = temp_config(&format!(
        "{LISTENER}workers: 1\nconnection:\n  buffer:\n    max_pool_size: 40000\n"
    ));
    let out = check_file(file.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("connection.buffer.max_pool_size (line 9): 40000 buffers over 1 worker is"),
        "{stderr}"
    );
    assert!(stderr.contains("at most 32768"), "{stderr}");
    // The largest that maps is accepted.
    let file = temp_config(&format!(
        "{LISTENER}workers: 1\nconnection:\n  buffer:\n    size: 4096\n    max_pool_size: 32768\n"
    ));
    let out = check_file(file.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
