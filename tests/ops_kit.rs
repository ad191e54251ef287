//! The operations kit (deploy/): the Prometheus configuration and alert rules pass promtool's
//! checks and their unit tests, every alert is fired by a test and links a runbook that
//! exists, the Grafana dashboard's queries are PromQL, and every metric the rules and the
//! dashboard read is exported by a running service.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use shelfsync::mqtt::topics::Topics;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a command printed, stdout then stderr.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs promtool in `dir`; its output, or a failure with it.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (make ops-deps installs it)");
    let text = said(&out);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every `shelfsync_…` metric name a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("shelfsync_") {
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let end = (at..bytes.len())
            .find(|&i| !word(bytes[i]))
            .unwrap_or(bytes.len());
        names.insert(text[at..end].to_owned());
    }
    names
}

/// The dashboard's queries (every `expr` of every panel's targets).
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = deploy().join("grafana/shelfsync.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut queries);
    queries
}

/// The alert names of the rules file (`- alert: Name` lines).
fn alert_names(rules: &str) -> BTreeSet<String> {
    (rules.lines())
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_every_alert_is_fired_by_a_test_and_has_its_runbook() {
    let dir = std::env::temp_dir().join(format!("shelfsync-ops-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "prometheus.yml",
        "shelfsync-rules.yml",
        "shelfsync-rules.test.yml",
    ] {
        std::fs::copy(deploy().join("prometheus").join(file), dir.join(file)).unwrap();
    }
    // The scrape's credentials file, as prometheus.yml expects it beside itself.
    std::fs::write(dir.join("shelfsync-metrics.key"), "a-viewer-key\n").unwrap();

    let rules = read(&dir.join("shelfsync-rules.yml"));
    let alerts = alert_names(&rules);
    assert_eq!(alerts.len(), 17, "{alerts:?}");
    let checked = promtool(&dir, &["check", "config", "prometheus.yml"]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    let tested = promtool(&dir, &["test", "rules", "shelfsync-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a test case that expects it to fire (exp_alerts after its alertname).
    let tests = read(&dir.join("shelfsync-rules.test.yml"));
    let mut fired = BTreeSet::new();
    for case in tests.split("- alertname:").skip(1) {
        let name = case.split_whitespace().next().unwrap().to_owned();
        if case.contains("exp_alerts:") {
            fired.insert(name);
        }
    }
    assert_eq!(alerts, fired, "alerts without a test that fires them");

    // Every alert links a runbook of deploy/runbooks/.
    let links: Vec<&str> = (rules.lines())
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(str::trim)
        .collect();
    assert_eq!(links.len(), alerts.len(), "one runbook_url per alert");
    for link in links {
        let file = link.rsplit('/').next().unwrap();
        assert!(
            deploy().join("runbooks").join(file).is_file(),
            "{link}: no deploy/runbooks/{file}"
        );
    }

    // The dashboard's queries are PromQL: promtool checks them as recording rules.
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let recorded: Vec<Value> = (queries.iter().enumerate())
        .map(|(i, q)| json!({"record": format!("dashboard:query_{i}"), "expr": q}))
        .collect();
    let file = json!({"groups": [{"name": "dashboard", "rules": recorded}]});
    // JSON is YAML.
    std::fs::write(dir.join("dashboard-queries.yml"), file.to_string()).unwrap();
    let checked = promtool(&dir, &["check", "rules", "dashboard-queries.yml"]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One line of an exposition: the value of the series named `name` whose labels include
/// every one of `labels` (`key="value"`), if it is there at all.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (head, value) = line.rsplit_once(' ')?;
        let (n, rest) = head.split_once('{').unwrap_or((head, ""));
        (n == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse().unwrap())
    })
}

#[actix_web::test]
async fn every_metric_the_rules_and_the_dashboard_read_is_in_a_scrape_of_the_service() {
    let app = spawn_app().await;
    let started = shelfsync::domain::now_ms() as f64 / 1000.0;
    // Traffic for the series that appear with their first count: a hold, a low-stock alert
    // (4 on hand, 1 held: 3 free), and a counter sale over MQTT.
    app.set_stock(OUTLET, SKU, 4).await;
    app.hold(OUTLET, SKU, 1, 300).await;
    assert!(mqtt_ready(&app).await);
    let pos = MqttClient::connect(app.settings.mqtt.port).await;
    let sale = json!({"event_id": "ops-kit-1", "sku": SKU2, "kind": "sale_counter", "qty": 1,
        "at": recent_at()});
    let topic = Topics::new(&app.settings.mqtt.topic_prefix).pos(OUTLET);
    pos.publish(&topic, sale.to_string()).await;
    assert!(
        eventually(20, || async {
            metric(
                &app,
                "shelfsync_mqtt_messages_in_total{outcome=\"applied\"}",
            )
            .await
                >= 1.0
                && metric(
                    &app,
                    &format!("shelfsync_alerts_raised{{outlet=\"{OUTLET}\",kind=\"low_stock\"}}"),
                )
                .await
                    >= 1.0
        })
        .await,
        "the sale and the alert"
    );
    let text = app.get("/metrics", VIEWER).await.text().await.unwrap();

    // What the service exports: every family of a `# TYPE` line, with a histogram's series.
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        exported.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let rules = read(&deploy().join("prometheus/shelfsync-rules.yml"));
    let mut used = metric_names(&rules);
    used.extend(dashboard_queries().iter().flat_map(|q| metric_names(q)));
    assert!(used.len() >= 25, "{used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "read by deploy/ but not exported: {missing:?}"
    );

    // The series the rules read exist before their first count, and say what they should.
    assert_eq!(series(&text, "shelfsync_ready", &[]), Some(1.0));
    for dependency in ["redis", "mongo", "mqtt"] {
        let label = format!("dependency=\"{dependency}\"");
        assert_eq!(
            series(&text, "shelfsync_dependency_up", &[&label]),
            Some(1.0),
            "{dependency}"
        );
    }
    let outlet = format!("outlet=\"{OUTLET}\"");
    let other = format!("outlet=\"{OTHER_OUTLET}\"");
    for (name, labels) in [
        ("shelfsync_reconciler_drift_skus_total", vec![&other[..]]),
        (
            "shelfsync_shed_total",
            vec![&outlet[..], "operation=\"hold\"", "reason=\"ledger_lag\""],
        ),
        ("shelfsync_oversell_risk_holds", vec![&other[..]]),
        (
            "shelfsync_mqtt_acks_total",
            vec!["outcome=\"left_to_redelivery\""],
        ),
    ] {
        assert_eq!(series(&text, name, &labels), Some(0.0), "{name} {labels:?}");
    }
    // One process owns every outlet of the catalogue: no outlet without an owner.
    let outlets = (text.lines())
        .filter(|l| l.starts_with("shelfsync_catalogue_outlet{") && l.ends_with(" 1"))
        .count();
    let owned = (text.lines())
        .filter(|l| l.starts_with("shelfsync_owned_outlets{") && l.ends_with(" 1"))
        .count();
    assert!(outlets >= 13, "{outlets}");
    assert_eq!(owned, outlets);
    // The till that sold was heard just now; another outlet's time is the process's start.
    let now = shelfsync::domain::now_ms() as f64 / 1000.0;
    let heard = series(
        &text,
        "shelfsync_pos_last_message_timestamp_seconds",
        &[&outlet],
    );
    assert!(heard.is_some_and(|t| t >= started && t <= now), "{heard:?}");
    let silent = series(
        &text,
        "shelfsync_pos_last_message_timestamp_seconds",
        &[&other],
    );
    assert!(
        silent.is_some_and(|t| t <= started && t > started - 120.0),
        "{silent:?}"
    );
    app.finish().await;
}

/// A fresh directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shelfsync-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `shelfsync --config deploy/production/shelfsync.toml --env-file <env_file> settings`, as
/// the service unit runs it, with `env` (and none of this process's own SHELFSYNC
/// variables): (succeeded, stdout, stderr).
fn production_settings(env_file: &Path, env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shelfsync"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHELFSYNC")) {
        command.env_remove(k);
    }
    let out = (command.envs(env.iter().copied()))
        .env("RUST_BACKTRACE", "0")
        .arg("--config")
        .arg(deploy().join("production/shelfsync.toml"))
        .arg("--env-file")
        .arg(env_file)
        .arg("settings")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The production settings with the example environment: refused while its placeholders
/// stand (naming them), taken once they are replaced, and what the process then runs with
/// is the production layout, printed without a secret.
#[test]
fn the_production_settings_refuse_the_placeholders_and_run_with_real_secrets() {
    let dir = scratch("production");
    let ca = dir.join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=broker-ca", "-keyout"])
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let example = deploy().join("production/shelfsync.env.example");
    // The broker's CA of production is not on this machine: a throwaway one stands in.
    let env = [("SHELFSYNC__MQTT__CA_FILE", ca.as_path())];

    let (ok, _, err) = production_settings(&example, &env);
    assert!(!ok, "placeholders taken");
    for named in [
        "cluster.secret",
        "whatsapp.app_secret",
        "api key 'head office'",
    ] {
        assert!(err.contains(named), "{named}: {err}");
    }

    // The example with every placeholder replaced, as an operator fills it in.
    let mut text = read(&example);
    let mut secrets = Vec::new();
    while let Some(at) = text.find("change-me-") {
        let end = (at..text.len())
            .find(|&i| !(text.as_bytes()[i].is_ascii_alphanumeric() || text.as_bytes()[i] == b'-'))
            .unwrap_or(text.len());
        let secret = uuid::Uuid::new_v4().simple().to_string();
        text.replace_range(at..end, &secret);
        secrets.push(secret);
    }
    assert!(secrets.len() >= 9, "{secrets:?}");
    let filled = dir.join("shelfsync-1.env");
    std::fs::write(&filled, text).unwrap();
    let (ok, out, err) = production_settings(&filled, &env);
    assert!(ok, "{err}");
    for shown in [
        "host: \"0.0.0.0\"",
        "node_id: \"shelfsync-1\"",
        "advertise_url: \"http://10.0.0.11:8080\"",
        "host: \"broker\"",
        "port: 8883",
        "tls: true",
        "username: Some(\n            \"shelfsync-1\"",
        "outlets_file: \"/etc/shelfsync/catalogue/outlets.csv\"",
    ] {
        assert!(out.contains(shown), "{shown} not in\n{out}");
    }
    assert_eq!(out.matches("ApiKeySettings").count(), 7, "{out}");
    for secret in &secrets {
        assert!(!out.contains(secret.as_str()), "a secret printed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// deploy/production/redis.conf on a redis-server of the test's own (its port and directory
/// given on the command line): every write appended and synced each second, never evicted.
#[actix_web::test]
async fn the_production_redis_keeps_every_write_and_never_evicts() {
    let dir = scratch("redis");
    let port = free_port();
    let conf = deploy().join("production/redis.conf");
    let data = dir.clone();
    let server = procs::Proc::start("redis-server", port, move || {
        let mut c = Command::new("redis-server");
        c.arg(&conf)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&data);
        c
    })
    .await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (name, want) in [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
        ("protected-mode", "yes"),
    ] {
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(got, [name, want]);
    }
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The systemd units pass `systemd-analyze verify` without a word (it prints what it
/// ignores), with the service's binary where the unit expects it.
#[test]
fn the_systemd_units_verify() {
    let dir = scratch("systemd");
    let units = deploy().join("production/systemd");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = read(&path).replace("/usr/local/bin/shelfsync", env!("CARGO_BIN_EXE_shelfsync"));
        std::fs::write(dir.join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        let out = Command::new("systemd-analyze")
            .args(["verify", &format!("./{name}")])
            .current_dir(&dir)
            .output()
            .expect("systemd-analyze (make ops-deps installs it)");
        let said = said(&out);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
