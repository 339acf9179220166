//! The deployment kit (docker/, kubernetes/, monitoring/) checked against
//! pgsplit itself: every YAML file parses, the Helm templates only use
//! values that exist, the configurations the chart and Compose ship pass
//! pgsplit's own validation, the image builds the binary the way the
//! README says, and every metric the dashboard and the alerts use is one a
//! running pgsplit exports. (scripts/kit.sh runs promtool, docker-compose
//! and the values schema.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pgsplit::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = "kubernetes/helm/pgsplit";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str, what: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`.
fn files(dir: &str, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![Path::new(ROOT).join(dir)];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_yaml_file_parses() {
    let mut checked = 0;
    for dir in ["docker", "monitoring", "kubernetes"] {
        for path in files(dir, &[".yml", ".yaml"]) {
            if path.components().any(|c| c.as_os_str() == "templates") {
                continue; // Go templates, checked below
            }
            let text = std::fs::read_to_string(&path).unwrap();
            yaml(&text, &path.display().to_string());
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} YAML files found");
}

/// `path` (dotted) exists in `values`.
fn defined(values: &serde_json::Value, path: &str) -> bool {
    path.split('.')
        .try_fold(values, |value, key| value.get(key))
        .is_some()
}

#[test]
fn templates_use_only_values_that_exist() {
    let values = yaml(&read(&format!("{CHART}/values.yaml")), "values.yaml");
    let mut used = BTreeSet::new();
    for template in files(&format!("{CHART}/templates"), &[".yaml", ".tpl", ".txt"]) {
        let text = std::fs::read_to_string(&template).unwrap();
        for (at, _) in text.match_indices(".Values.") {
            let rest = &text[at + ".Values.".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            used.insert(rest[..end].trim_end_matches('.').to_owned());
        }
    }
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|p| !defined(&values, p)).collect();
    assert!(
        missing.is_empty(),
        "templates use undefined values: {missing:?}"
    );
    // The alert rules the PrometheusRule embeds are the monitoring/ ones.
    assert_eq!(
        read(&format!("{CHART}/files/pgsplit.rules.yml")),
        read("monitoring/pgsplit.rules.yml")
    );
}

/// Validates a pgsplit configuration given as a YAML/JSON value.
fn check_config(config: &serde_json::Value, what: &str) -> Config {
    let env = |name: &str| match name {
        "APP_PASSWORD" | "PG_ADMIN_PASSWORD" | "POSTGRES_PASSWORD" => Some("secret".to_owned()),
        _ => None,
    };
    Config::from_yaml(&config.to_string(), &env).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn shipped_configurations_pass_pgsplit_check() {
    let values = yaml(&read(&format!("{CHART}/values.yaml")), "values.yaml");
    check_config(&values["config"], "values.yaml config");
    for example in ["cloudnativepg", "patroni"] {
        let path = format!("{CHART}/examples/{example}.yaml");
        let config = check_config(&yaml(&read(&path), &path)["config"], &path);
        assert_eq!(
            config.failover.mode,
            pgsplit::config::FailoverMode::External,
            "{path}"
        );
    }
    let compose = check_config(
        &yaml(&read("docker/pgsplit.yaml"), "docker/pgsplit.yaml"),
        "docker/pgsplit.yaml",
    );
    assert_eq!(compose.nodes.len(), 3);
}

#[test]
fn the_image_builds_what_cargo_builds_and_runs_as_documented() {
    let dockerfile = read("docker/Dockerfile");
    for needle in [
        "cargo build --release --locked --bin pgsplit",
        "COPY --from=build /src/target/release/pgsplit",
        "USER pgsplit",
        "EXPOSE 6432 9930",
        "/live",
        "CMD [\"--config\", \"/etc/pgsplit/pgsplit.yaml\"]",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle:?}");
    }
    let readme = read("docker/README.md");
    assert!(
        readme.contains("docker compose -f docker/docker-compose.yml up"),
        "docker/README.md"
    );
}

/// Metric families in PromQL text (`pgsplit_...`, histogram suffixes stripped).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("pgsplit_") {
        // Part of a recording rule's name (pgsplit:..) or of a longer word?
        if at > 0 && text.as_bytes()[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
    }
    names
}

#[test]
fn dashboard_and_alerts_use_metrics_pgsplit_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("monitoring/grafana/pgsplit.json")).unwrap();
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    let mut used = metric_names(&queries);
    let rules = read("monitoring/pgsplit.rules.yml");
    used.extend(metric_names(&rules));
    assert!(used.len() >= 12, "{used:?}");

    let proxy = common::spawn_watched_proxy(common::proxy_config(""));
    let (status, exposition) = common::admin_get(proxy.admin, "/metrics");
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "not exported by pgsplit: {unknown:?}");
}
