//! Configuration tests: the spec's examples and defaults through the library, and
//! `sssonector check` / parse errors through the binary (exit codes, key paths, lines).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sssonector::config::{
    Balance, BufferConfig, ConnectionConfig, HealthCheckConfig, MonitoringConfig, PoolConfig,
    SendMode, SessionConfig, Workers, DEMO_CONFIG,
};
use sssonector::{Config, ConfigError};
use support::{check_file, sssonector, temp_config};

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
        session: SessionConfig {
            idle_timeout: secs(3600),
            send_timeout: secs(60),
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
fn effective_yaml_round_trips_in_go_syntax() {
    let c = parse_with_listener(
        "workers: 3\nconnection:\n  pool:\n    idle_timeout: 90s\n  health_check:\n    timeout: 500ms\n",
    );
    let yaml = c.to_effective_yaml();
    assert!(yaml.contains("idle_timeout: 1m30s"), "{yaml}");
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

/// Every Go duration form a spec user writes, through a config key, and what it means.
#[test]
fn go_durations_accepted() {
    for (text, want) in [
        ("300ms", Duration::from_millis(300)),
        ("5s", secs(5)),
        ("5m", secs(300)),
        ("1h", secs(3600)),
        ("1.5h", secs(5400)),
        ("2h45m", secs(9900)),
        (".5s", Duration::from_millis(500)),
        ("1h0m0s", secs(3600)),
        ("1m30s", secs(90)),
        ("1.5ms", Duration::from_micros(1500)),
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("\"2s\"", secs(2)),
        ("+10s", secs(10)),
    ] {
        let c = parse_with_listener(&format!("connection:\n  pool:\n    idle_timeout: {text}\n"));
        assert_eq!(c.connection.pool.idle_timeout, want, "{text}");
    }
}

/// Forms Go refuses, or that mean something else in Go, refused with the valid units.
#[test]
fn go_durations_refused() {
    for (text, why) in [
        ("5M", "`M` is not minutes"),
        ("1d", "no day unit; write 24h"),
        ("1y", "no year unit; write 8760h"),
        ("2w", "168h"),
        ("5 m", "no spaces"),
        ("1m 30s", "no spaces"),
        ("5sec", "write `s`"),
        ("5min", "write `m`"),
        ("1hour", "write `h`"),
        ("5S", "lower case"),
        ("5x", "unknown unit `x`"),
        ("30", "a unit is required"),
        ("1.5", "a unit is required"),
        ("-5s", "cannot be negative"),
        ("s", "a number expected"),
        ("3000000h", "too long"),
    ] {
        let text_yaml = format!("{LISTENER}connection:\n  pool:\n    idle_timeout: {text}\n");
        match Config::parse(&text_yaml) {
            Ok(c) => panic!("`{text}` accepted as {:?}", c.connection.pool.idle_timeout),
            Err(ConfigError::Invalid { key, line, message }) => {
                assert_eq!(key, "connection.pool.idle_timeout", "{text}");
                assert_eq!(line, Some(8), "{text}");
                assert!(message.contains(why), "`{text}`: {message}");
                assert!(
                    message.contains(&format!("`{text}`")),
                    "`{text}`: {message}"
                );
                if why != "cannot be negative" && why != "too long" {
                    assert!(
                        message.contains("ns, us (or µs), ms, s, m, h"),
                        "`{text}`: {message}"
                    );
                }
            }
            Err(other) => panic!("`{text}`: {other}"),
        }
    }
}

/// A plain `0` is zero: "off" for the session timeout, an error for a timeout that
/// cannot be zero.
#[test]
fn zero_durations() {
    let c = parse_with_listener("connection:\n  session:\n    idle_timeout: 0\n");
    assert_eq!(c.connection.session.idle_limit(), None);
    let c = parse_with_listener("connection:\n  session:\n    idle_timeout: 0s\n");
    assert_eq!(c.connection.session.idle_limit(), None);
    assert_eq!(
        parse_with_listener("").connection.session.idle_limit(),
        Some(secs(3600))
    );
    let yaml =
        parse_with_listener("connection:\n  session:\n    idle_timeout: 0\n").to_effective_yaml();
    assert!(yaml.contains("idle_timeout: 0s"), "{yaml}");
    assert!(yaml.contains("never closed for inactivity"), "{yaml}");
    for key in ["pool:\n    idle_timeout", "health_check:\n    interval"] {
        let text = format!("{LISTENER}connection:\n  {key}: 0\n");
        let err = Config::parse(&text).expect_err(key);
        assert!(err.to_string().contains("non-zero"), "{key}: {err}");
    }
}

/// `listen` takes what HAProxy and nginx users write, and check prints the address used.
#[test]
fn listen_forms() {
    for (text, want) in [
        ("127.0.0.1:8443", "127.0.0.1:8443"),
        ("\":8443\"", "0.0.0.0:8443"),
        ("\"*:8443\"", "0.0.0.0:8443"),
        ("\"[::1]:8443\"", "[::1]:8443"),
        ("localhost:8443", "127.0.0.1:8443"),
    ] {
        let c = Config::parse(&format!(
            "listeners:\n  - name: a\n    listen: {text}\n    upstreams: [127.0.0.1:1]\n"
        ))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.listeners[0].listen, addr(want), "{text}");
    }
    let c = Config::from_cli(None, Some(":8000"), &["127.0.0.1:1".into()], None)
        .expect("--listen :8000");
    assert_eq!(c.listeners[0].listen, addr("0.0.0.0:8000"));
}
