//! Configuration tests: the spec's examples and defaults through the library, and
//! `sssonector check` / parse errors through the binary (exit codes, key paths, lines).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sssonector::config::{
    Balance, BufferConfig, ConnectionConfig, HealthCheckConfig, MonitoringConfig, PoolConfig,
    SendMode, Workers, DEMO_CONFIG,
};
use sssonector::{Config, ConfigError};

const LISTENER: &str = "\
listeners:
  - name: test
    listen: 127.0.0.1:8443
    upstreams:
      - 127.0.0.1:9000
";

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The defaults the spec lists, key by key (plus ours for the added keys).
fn spec_defaults() -> ConnectionConfig {
    ConnectionConfig {
        pool: PoolConfig {
            enabled: true,
            idle_timeout: secs(300),
            max_idle: 100,
            max_active: 1000,
            retry_interval: secs(5),
            max_retries: 3,
            connect_timeout: secs(5),
            queue_timeout: secs(10),
            max_queued: 1000,
            balance: Balance::RoundRobin,
        },
        health_check: HealthCheckConfig {
            enabled: true,
            interval: secs(30),
            timeout: secs(1),
            rise: 2,
            fall: 3,
        },
        buffer: BufferConfig {
            size: 65536,
            max_pool_size: 1000,
            max_in_flight: 4,
            send_mode: SendMode::Auto,
        },
        monitoring: MonitoringConfig {
            enabled: true,
            metrics_interval: secs(60),
            listen: "127.0.0.1:9090".parse().expect("literal address"),
        },
    }
}

fn parse_with_listener(connection: &str) -> Config {
    let text = format!("{LISTENER}{connection}");
    match Config::parse(&text) {
        Ok(c) => c,
        Err(e) => panic!("does not parse: {e}\n{text}"),
    }
}

#[test]
fn defaults_are_the_specs() {
    assert_eq!(ConnectionConfig::default(), spec_defaults());
    let c = parse_with_listener("");
    assert_eq!(c.connection, spec_defaults());
    assert_eq!(c.workers, Workers::Auto);
    assert_eq!(c.listeners[0].resolved, vec![addr("127.0.0.1:9000")]);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

#[test]
fn spec_basic_configuration() {
    let c = parse_with_listener("connection:\n  pool:\n    enabled: true\n    max_active: 1000\n");
    assert_eq!(c.connection, spec_defaults());
}

#[test]
fn spec_full_configuration_example() {
    // Verbatim, including the whitespace-only lines between sections.
    let c = parse_with_listener(
        "connection:
  pool:
    enabled: true
    idle_timeout: 5m
    max_idle: 100
    max_active: 1000
    retry_interval: 5s
    max_retries: 3
    
  health_check:
    enabled: true
    interval: 30s
    timeout: 1s
    
  buffer:
    size: 65536          # 64KB buffer size
    max_pool_size: 1000  # Maximum buffers in pool
    
  monitoring:
    enabled: true
    metrics_interval: 60s
",
    );
    assert_eq!(c.connection, spec_defaults());
}

#[test]
fn spec_high_performance_server() {
    let c = parse_with_listener(
        "connection:
  pool:
    enabled: true
    max_idle: 500
    max_active: 5000
    retry_interval: 1s
  buffer:
    size: 131072      # 128KB
    max_pool_size: 2000
",
    );
    let mut want = spec_defaults();
    want.pool.max_idle = 500;
    want.pool.max_active = 5000;
    want.pool.retry_interval = secs(1);
    want.buffer.size = 131072;
    want.buffer.max_pool_size = 2000;
    assert_eq!(c.connection, want);
}

#[test]
fn spec_memory_constrained_client() {
    let c = parse_with_listener(
        "connection:
  pool:
    enabled: true
    max_idle: 50
    max_active: 200
    idle_timeout: 1m
  buffer:
    size: 32768       # 32KB
    max_pool_size: 500
",
    );
    let mut want = spec_defaults();
    want.pool.max_idle = 50;
    want.pool.max_active = 200;
    want.pool.idle_timeout = secs(60);
    want.buffer.size = 32768;
    want.buffer.max_pool_size = 500;
    assert_eq!(c.connection, want);
}

#[test]
fn spec_high_reliability_setup() {
    let c = parse_with_listener(
        "connection:
  pool:
    enabled: true
    max_retries: 5
    retry_interval: 2s
  health_check:
    interval: 15s
    timeout: 500ms
",
    );
    let mut want = spec_defaults();
    want.pool.max_retries = 5;
    want.pool.retry_interval = secs(2);
    want.health_check.interval = secs(15);
    want.health_check.timeout = Duration::from_millis(500);
    assert_eq!(c.connection, want);
}

#[test]
fn spec_migration_snippets() {
    // The guide's four "Migration Guide" steps, dedented out of their list items.
    let snippets = [
        "connection:\n  pool:\n    enabled: true\n    max_active: 1000\n",
        "connection:\n  health_check:\n    enabled: true\n    interval: 30s\n",
        "connection:\n  buffer:\n    size: 65536\n    max_pool_size: 1000\n",
        "connection:\n  monitoring:\n    enabled: true\n    metrics_interval: 60s\n",
    ];
    for s in snippets {
        assert_eq!(parse_with_listener(s).connection, spec_defaults(), "{s}");
    }
}

#[test]
fn every_file_in_configs_loads() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(configs_dir()).expect("configs/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(e) = Config::load(&path) {
                panic!("{}: {e}", path.display());
            }
            seen.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
    }
    for want in [
        "minimal.yaml",
        "full.yaml",
        "basic.yaml",
        "advanced.yaml",
        "high-performance.yaml",
        "memory-constrained.yaml",
        "high-reliability.yaml",
        "demo.yaml",
    ] {
        assert!(
            seen.contains(&Some(want.to_string())),
            "configs/{want} missing"
        );
    }
}

#[test]
fn full_yaml_sets_every_key_to_its_default() {
    let c = Config::load(&configs_dir().join("full.yaml")).expect("full.yaml loads");
    assert_eq!(c.connection, spec_defaults());
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].upstreams.len(), 2);
    assert_eq!(c.listeners[0].resolved.len(), 2);
}

#[test]
fn demo_config() {
    let c = Config::parse(DEMO_CONFIG).expect("demo config parses");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].name, "demo");
    assert_eq!(c.listeners[0].listen, addr("127.0.0.1:0"));
    assert_eq!(c.listeners[0].upstreams, vec!["127.0.0.1:9".to_string()]);
    assert_eq!(c.workers, Workers::Auto);
    assert_eq!(c.connection, spec_defaults());
}

#[test]
fn single_upstream_string() {
    let c = Config::parse(
        "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams: 127.0.0.1:2\n",
    )
    .expect("a single upstream string parses");
    assert_eq!(c.listeners[0].upstreams, vec!["127.0.0.1:2".to_string()]);
}

#[test]
fn durations() {
    for (text, want) in [
        ("500ms", Duration::from_millis(500)),
        ("5s", secs(5)),
        ("5m", secs(300)),
        ("1h", secs(3600)),
        ("1h30m", secs(5400)),
        ("1m 30s", secs(90)),
        ("\"2s\"", secs(2)),
    ] {
        let c = parse_with_listener(&format!("connection:\n  pool:\n    idle_timeout: {text}\n"));
        assert_eq!(c.connection.pool.idle_timeout, want, "{text}");
    }
}

#[test]
fn effective_yaml_round_trips_and_uses_humantime() {
    let c = parse_with_listener(
        "workers: 3\nconnection:\n  pool:\n    idle_timeout: 90s\n  health_check:\n    timeout: 500ms\n",
    );
    let yaml = c.to_effective_yaml();
    assert!(yaml.contains("idle_timeout: 1m 30s"), "{yaml}");
    assert!(yaml.contains("timeout: 500ms"), "{yaml}");
    assert!(yaml.contains("workers: 3"), "{yaml}");
    assert!(!yaml.contains("secs"), "{yaml}");
    let again = Config::parse(&yaml).expect("effective YAML parses");
    assert_eq!(again, c);
}

#[test]
fn from_cli_flags() {
    // No file: the flags make the whole listener list.
    let c = Config::from_cli(
        None,
        Some("127.0.0.1:8000"),
        &["127.0.0.1:9000".into(), "localhost:9001".into()],
        Some("2"),
    )
    .expect("flags alone make a config");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].name, "cli");
    assert_eq!(c.listeners[0].resolved.len(), 2);
    assert_eq!(c.workers, Workers::Count(2));
    assert_eq!(c.connection, spec_defaults());

    // With a file: the flags add a listener and override workers.
    let file = temp_config(&format!("{LISTENER}workers: 4\n"));
    let c = Config::from_cli(
        Some(file.path()),
        Some("127.0.0.1:8001"),
        &["127.0.0.1:9000".into()],
        Some("auto"),
    )
    .expect("file plus flags");
    let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["test", "cli"]);
    assert_eq!(c.workers, Workers::Auto);

    // A file listener named `cli` is replaced by the flags.
    let file = temp_config(
        "listeners:\n  - name: cli\n    listen: 127.0.0.1:8002\n    upstreams: [127.0.0.1:1]\n",
    );
    let c = Config::from_cli(
        Some(file.path()),
        Some("127.0.0.1:8003"),
        &["127.0.0.1:9000".into()],
        None,
    )
    .expect("flags replace `cli`");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].listen, addr("127.0.0.1:8003"));

    // Nothing at all.
    let err = Config::from_cli(None, None, &[], None).expect_err("no listener");
    assert!(err.to_string().starts_with("listeners"), "{err}");
}

#[test]
fn semantic_errors_carry_key_and_line() {
    let text =
        format!("{LISTENER}connection:\n  pool:\n    max_idle: 10\n  buffer:\n    size: 100\n");
    match Config::parse(&text) {
        Err(ConfigError::Invalid { key, line, message }) => {
            assert_eq!(key, "connection.buffer.size");
            assert_eq!(line, Some(10));
            assert_eq!(message, "4096..1048576 expected, got 100");
        }
        other => panic!("unexpected: {other:?}"),
    }
}

fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    f.flush().expect("flush temp file");
    f
}

fn sssonector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(args)
        .env("SSSONECTOR_LOG", "warn")
        .output()
        .expect("run sssonector")
}

fn check_file(path: &Path) -> Output {
    sssonector(&["check", "--config", &path.to_string_lossy()])
}

#[test]
fn cli_check_accepts_every_file_in_configs() {
    for entry in std::fs::read_dir(configs_dir()).expect("configs/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = check_file(&path);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("connection:"), "{stdout}");
        }
    }
}

#[test]
fn cli_check_prints_filled_defaults() {
    let out = check_file(&configs_dir().join("minimal.yaml"));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "workers: auto",
        "idle_timeout: 5m",
        "max_idle: 100",
        "max_active: 1000",
        "retry_interval: 5s",
        "max_retries: 3",
        "connect_timeout: 5s",
        "queue_timeout: 10s",
        "max_queued: 1000",
        "balance: round_robin",
        "interval: 30s",
        "timeout: 1s",
        "rise: 2",
        "fall: 3",
        "size: 65536",
        "max_pool_size: 1000",
        "max_in_flight: 4",
        "send_mode: auto",
        "metrics_interval: 1m",
        "listen: 127.0.0.1:9090",
        "upstream 127.0.0.1:9000 -> 127.0.0.1:9000",
    ] {
        assert!(stdout.contains(want), "missing `{want}` in:\n{stdout}");
    }
}

#[test]
fn cli_check_with_flags_only() {
    let out = sssonector(&[
        "check",
        "--listen",
        "127.0.0.1:8000",
        "--upstream",
        "127.0.0.1:9000",
        "--workers",
        "2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("name: cli"), "{stdout}");
    assert!(stdout.contains("workers: 2"), "{stdout}");
}

/// An invalid config: the text, and what stderr must contain (key, and line where the
/// error is in the file).
struct Bad {
    what: &'static str,
    text: String,
    expect: Vec<&'static str>,
}

fn bad(what: &'static str, text: &str, expect: &[&'static str]) -> Bad {
    Bad {
        what,
        text: text.to_string(),
        expect: expect.to_vec(),
    }
}

/// `connection:` text after the standard listener (which takes lines 1-5).
fn bad_conn(what: &'static str, connection: &str, expect: &[&'static str]) -> Bad {
    Bad {
        what,
        text: format!("{LISTENER}{connection}"),
        expect: expect.to_vec(),
    }
}

const TWO: &str = "\
listeners:
  - name: a
    listen: 127.0.0.1:8443
    upstreams: [127.0.0.1:9000]
  - name: b
    listen: 127.0.0.1:8444
    upstreams: [127.0.0.1:9001]
";

fn invalid_cases() -> Vec<Bad> {
    vec![
        bad("empty file", "", &["(top level)", "empty"]),
        bad("comments only", "# nothing\n\n", &["(top level)", "empty"]),
        bad("top-level sequence", "- a\n- b\n", &["(top level) (line 1)", "mapping"]),
        bad("top-level scalar", "# c\nhello\n", &["(top level) (line 2)", "mapping"]),
        bad("YAML syntax", "listeners: [a\n", &["YAML syntax error (line"]),
        bad("duplicate key", "workers: 1\nworkers: 2\n", &["YAML syntax error", "duplicate"]),
        bad("unknown top-level key", "listners: []\n", &["listners (line 1)", "unknown field"]),
        bad_conn(
            "unknown pool key",
            "connection:\n  pool:\n    max_idel: 5\n",
            &["connection.pool.max_idel (line 8)", "unknown field"],
        ),
        bad_conn(
            "unknown health_check key",
            "connection:\n  health_check:\n    intervall: 5s\n",
            &["connection.health_check.intervall (line 8)"],
        ),
        bad_conn(
            "unknown connection section",
            "connection:\n  pools:\n    enabled: true\n",
            &["connection.pools (line 7)"],
        ),
        bad(
            "unknown listener key",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: [127.0.0.1:2]\n",
            &["listeners[0].upstream (line 4)", "unknown field"],
        ),
        bad("no listeners", "connection:\n  pool:\n    enabled: true\n", &["listeners", "at least one listener"]),
        bad("empty listener list", "workers: 2\nlisteners: []\n", &["listeners (line 2)"]),
        bad(
            "listener without listen",
            "listeners:\n  - name: a\n    upstreams: [127.0.0.1:2]\n",
            &["listeners[0] (line 2)", "missing field `listen`"],
        ),
        bad(
            "listener without name",
            "listeners:\n  - listen: 127.0.0.1:1\n    upstreams: [127.0.0.1:2]\n",
            &["listeners[0]", "missing field `name`"],
        ),
        bad(
            "bad listen address",
            "listeners:\n  - name: a\n    listen: localhost\n    upstreams: [127.0.0.1:2]\n",
            &["listeners[0].listen (line 3)"],
        ),
        bad(
            "empty name",
            "listeners:\n  - name: \"\"\n    listen: 127.0.0.1:1\n    upstreams: [127.0.0.1:2]\n",
            &["listeners[0].name (line 2)", "non-empty"],
        ),
        bad(
            "duplicate name",
            &TWO.replace("name: b", "name: a"),
            &["listeners[1].name (line 5)", "duplicate"],
        ),
        bad(
            "duplicate listen address",
            &TWO.replace("8444", "8443"),
            &["listeners[1].listen (line 6)", "overlaps"],
        ),
        bad(
            "wildcard listen overlap",
            &TWO.replace("127.0.0.1:8444", "0.0.0.0:8443"),
            &["listeners[1].listen (line 6)", "overlaps"],
        ),
        bad(
            "no upstreams",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams: []\n",
            &["listeners[0].upstreams (line 4)", "at least one upstream"],
        ),
        bad(
            "upstreams of the wrong type",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams: {a: 1}\n",
            &["listeners[0].upstreams (line 4)", "host:port"],
        ),
        bad(
            "upstream without port",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1\n",
            &["listeners[0].upstreams[0] (line 5)", "host:port"],
        ),
        bad(
            "upstream port 0",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1:2\n      - 127.0.0.1:0\n",
            &["listeners[0].upstreams[1] (line 6)", "port"],
        ),
        bad(
            "unresolvable upstream",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - no-such-host.invalid:80\n",
            &["listeners[0].upstreams[0] (line 5)", "cannot resolve"],
        ),
        bad(
            "duplicate upstream",
            "listeners:\n  - name: a\n    listen: 127.0.0.1:1\n    upstreams:\n      - 127.0.0.1:2\n      - 127.0.0.1:2\n",
            &["listeners[0].upstreams[1] (line 6)", "duplicate"],
        ),
        bad_conn(
            "buffer too small",
            "connection:\n  buffer:\n    size: 100\n",
            &["connection.buffer.size (line 8): 4096..1048576 expected, got 100"],
        ),
        bad_conn(
            "buffer too large",
            "connection:\n  buffer:\n    size: 2097152\n",
            &["connection.buffer.size (line 8)", "got 2097152"],
        ),
        bad_conn(
            "max_pool_size 0",
            "connection:\n  buffer:\n    max_pool_size: 0\n",
            &["connection.buffer.max_pool_size (line 8)"],
        ),
        bad_conn(
            "max_in_flight out of range",
            "connection:\n  buffer:\n    max_in_flight: 17\n",
            &["connection.buffer.max_in_flight (line 8)", "1..16"],
        ),
        bad_conn(
            "unknown send_mode",
            "connection:\n  buffer:\n    send_mode: turbo\n",
            &["connection.buffer.send_mode (line 8)", "unknown variant"],
        ),
        bad_conn(
            "max_idle above max_active",
            "connection:\n  pool:\n    max_idle: 2000\n    max_active: 1000\n",
            &["connection.pool.max_idle (line 8)", "must not exceed"],
        ),
        bad_conn(
            "max_active below default max_idle",
            "connection:\n  pool:\n    max_active: 50\n",
            &["connection.pool.max_active (line 8)", "max_idle (100"],
        ),
        bad_conn(
            "max_active 0",
            "connection:\n  pool:\n    max_idle: 0\n    max_active: 0\n",
            &["connection.pool.max_active (line 9)"],
        ),
        bad_conn(
            "zero idle_timeout",
            "connection:\n  pool:\n    idle_timeout: 0s\n",
            &["connection.pool.idle_timeout (line 8)", "non-zero"],
        ),
        bad_conn(
            "bad duration unit",
            "connection:\n  pool:\n    retry_interval: 5x\n",
            &["connection.pool.retry_interval (line 8)", "unknown time unit"],
        ),
        bad_conn(
            "duration without unit",
            "connection:\n  health_check:\n    interval: 30\n",
            &["connection.health_check.interval (line 8)", "unit"],
        ),
        bad_conn(
            "health timeout not below interval",
            "connection:\n  health_check:\n    interval: 2s\n    timeout: 5s\n",
            &["connection.health_check.timeout (line 9)", "shorter"],
        ),
        bad_conn(
            "health rise 0",
            "connection:\n  health_check:\n    rise: 0\n",
            &["connection.health_check.rise (line 8)"],
        ),
        bad_conn(
            "zero metrics_interval",
            "connection:\n  monitoring:\n    metrics_interval: 0ms\n",
            &["connection.monitoring.metrics_interval (line 8)"],
        ),
        bad_conn(
            "admin address on a listener's port",
            "connection:\n  monitoring:\n    listen: 127.0.0.1:8443\n",
            &["connection.monitoring.listen (line 8)", "overlaps"],
        ),
        bad_conn(
            "negative number",
            "connection:\n  pool:\n    max_retries: -1\n",
            &["connection.pool.max_retries (line 8)", "-1"],
        ),
        bad_conn(
            "wrong type: string for bool",
            "connection:\n  pool:\n    enabled: sometimes\n",
            &["connection.pool.enabled (line 8)", "invalid type"],
        ),
        bad_conn(
            "wrong type: sequence for number",
            "connection:\n  buffer:\n    size: [1]\n",
            &["connection.buffer.size (line 8)", "invalid type"],
        ),
        bad_conn(
            "wrong type: scalar for section",
            "connection:\n  pool: yes\n",
            &["connection.pool (line 7)", "expected a mapping"],
        ),
        bad_conn("workers 0", "workers: 0\n", &["workers (line 6)", "1..1024"]),
        bad_conn("workers too many", "workers: 5000\n", &["workers (line 6)", "1..1024"]),
        bad_conn("workers word", "workers: many\n", &["workers (line 6)", "auto"]),
    ]
}

#[test]
fn cli_rejects_invalid_configs_with_key_and_line() {
    let cases = invalid_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in &cases {
        let file = temp_config(&case.text);
        let out = check_file(file.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ok = out.status.code() == Some(2)
            && !stderr.contains("panicked")
            && case.expect.iter().all(|e| stderr.contains(e));
        if !ok {
            failures.push(format!(
                "{}: exit {:?}, stderr: {stderr}  expected: {:?}",
                case.what,
                out.status.code(),
                case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn cli_rejects_bad_flags() {
    let cases: &[(&[&str], &str)] = &[
        (&["check"], "listeners"),
        (
            &["check", "--listen", "nonsense", "--upstream", "127.0.0.1:1"],
            "--listen",
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
    ];
    for (args, key) in cases {
        let out = sssonector(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: `{key}` not in {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn errors_name_the_file() {
    let file = temp_config("workers: 0\n");
    let out = check_file(file.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*file.path().to_string_lossy()), "{stderr}");
}
