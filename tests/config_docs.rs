//! `docs/configuration.md` and `check`'s effective configuration agree with the config
//! structs: the same keys, the documented defaults, a comment on every key.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use sssonector::config::{duration, schema};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A documented key: its full path (`connection.pool.max_idle`, `listeners[].listen`)
/// and its default cell.
struct DocKey {
    path: String,
    default: String,
}

/// The key tables of docs/configuration.md: a heading names the section (`Top level`,
/// `` `listeners[]` ``, `` `connection.pool` ``), a table whose first column is `key`
/// lists its keys. Also returns the sections named by headings.
fn documented() -> (Vec<DocKey>, BTreeSet<String>) {
    let text = std::fs::read_to_string(root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let mut keys = Vec::new();
    let mut sections = BTreeSet::new();
    let mut section: Option<String> = None;
    let mut in_key_table = false;
    let mut default_col = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix('#') {
            let title = h.trim_start_matches('#').trim();
            section = if title == "Top level" {
                Some(String::new())
            } else {
                title
                    .strip_prefix('`')
                    .and_then(|t| t.strip_suffix('`'))
                    .map(str::to_string)
            };
            if let Some(s) = section.as_ref().filter(|s| !s.is_empty()) {
                sections.insert(s.clone());
            }
            in_key_table = false;
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .map(|l| l.split('|').map(str::trim).collect())
            .unwrap_or_default();
        if cells.is_empty() {
            in_key_table = false;
            continue;
        }
        if cells[0] == "key" {
            in_key_table = true;
            default_col = cells.iter().position(|c| *c == "default");
            continue;
        }
        if !in_key_table || cells[0].starts_with("---") {
            continue;
        }
        let Some(prefix) = &section else { continue };
        let key = cells[0].trim_matches('`');
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}").replace(".[", "[")
        };
        let default = default_col
            .and_then(|i| cells.get(i))
            .copied()
            .unwrap_or("")
            .to_string();
        keys.push(DocKey { path, default });
    }
    (keys, sections)
}

/// The effective configuration of configs/minimal.yaml, as `check` prints it.
fn check_minimal() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(["check", "--config"])
        .arg(root().join("configs/minimal.yaml"))
        .env("SSSONECTOR_LOG", "warn")
        // The defaults, whatever data plane the suite's pass runs on.
        .env_remove("SSSONECTOR_DATA_PLANE")
        .output()
        .expect("run sssonector check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every key path of a YAML value, list items as `[]`.
fn paths(value: &serde_yaml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().expect("string keys");
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            if let Some(first) = items.first().filter(|v| v.is_mapping()) {
                paths(first, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// The scalar at `path` (no list items) in `value`, as text.
fn scalar_at(value: &serde_yaml::Value, path: &str) -> Option<String> {
    let mut v = value;
    for seg in path.split('.') {
        v = v.get(seg)?;
    }
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[test]
fn docs_check_and_structs_list_the_same_keys() {
    let structs: BTreeSet<String> = schema::key_paths().into_iter().collect();
    let effective: serde_yaml::Value =
        serde_yaml::from_str(&check_minimal()).expect("check's output is YAML");
    let mut printed = BTreeSet::new();
    paths(&effective, "", &mut printed);
    assert_eq!(
        printed, structs,
        "check prints exactly the keys the structs accept"
    );

    let (doc_keys, sections) = documented();
    let documented: BTreeSet<String> = doc_keys.iter().map(|k| k.path.clone()).collect();
    assert_eq!(
        doc_keys.len(),
        documented.len(),
        "a key is documented twice"
    );
    let undocumented: Vec<&String> = structs
        .iter()
        .filter(|p| !documented.contains(*p) && !sections.contains(*p))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys the code accepts but docs/configuration.md does not list: {undocumented:?}"
    );
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|p| !structs.contains(*p))
        .collect();
    assert!(
        unknown.is_empty(),
        "keys docs/configuration.md lists but the code refuses: {unknown:?}"
    );
}

#[test]
fn documented_defaults_are_the_effective_ones() {
    let effective: serde_yaml::Value =
        serde_yaml::from_str(&check_minimal()).expect("check's output is YAML");
    let (doc_keys, _) = documented();
    let mut compared = 0;
    for k in &doc_keys {
        // Only single values such as `5m` or `true`; "none (required)" and the like are
        // prose.
        let Some(want) = k
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        else {
            continue;
        };
        if k.path.contains("[]") {
            continue;
        }
        let got = scalar_at(&effective, &k.path)
            .unwrap_or_else(|| panic!("{}: not in check's output", k.path));
        let same = match (duration::parse(want), duration::parse(&got)) {
            (Ok(a), Ok(b)) if want.chars().any(|c| c.is_ascii_alphabetic()) => a == b,
            _ => want == got,
        };
        assert!(same, "{}: docs say `{want}`, check prints `{got}`", k.path);
        compared += 1;
    }
    // Every key with a default (all but the listeners' and the sections) was compared.
    let all = schema::key_paths();
    let is_section = |p: &str| all.iter().any(|q| q.starts_with(&format!("{p}.")));
    let leaves = all
        .iter()
        .filter(|p| !p.starts_with("listeners") && !is_section(p))
        .count();
    assert_eq!(compared, leaves, "defaults compared");
}

#[test]
fn check_comments_every_key() {
    let out = check_minimal();
    let mut missing = Vec::new();
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let body = line.trim_start().trim_start_matches("- ");
        let is_key = body.split_once(':').is_some_and(|(k, rest)| {
            !k.contains(' ') && (rest.is_empty() || rest.starts_with(' '))
        });
        if is_key && !line.contains(" # ") {
            missing.push(line.to_string());
        }
    }
    assert!(missing.is_empty(), "keys without a comment: {missing:#?}");
    for want in [
        "max_idle: 100",
        "total idle upstream connections the proxy keeps, over all endpoints and workers",
        "idle_timeout: 1h",
        "0: never",
        "drain_delay: 5s",
        "listeners keep accepting this long while /readyz fails",
        "grace_period: 20s",
        "# admin: http://127.0.0.1:9090/ (status page), /healthz, /readyz, /metrics",
        "# shutdown: on SIGTERM/SIGINT /readyz fails, listeners close after 5s, sessions in flight get 20s more",
    ] {
        assert!(out.contains(want), "`{want}` not in:\n{out}");
    }
}

/// configs/full.yaml claims to set every key: it does, and no other.
#[test]
fn full_yaml_sets_every_key() {
    let text = std::fs::read_to_string(root().join("configs/full.yaml")).expect("full.yaml");
    let value: serde_yaml::Value = serde_yaml::from_str(&text).expect("full.yaml is YAML");
    let mut written = BTreeSet::new();
    paths(&value, "", &mut written);
    let structs: BTreeSet<String> = schema::key_paths().into_iter().collect();
    assert_eq!(written, structs);
}
