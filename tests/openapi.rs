//! The OpenAPI document at `/openapi.json`: it is OpenAPI 3, it describes exactly the routes
//! of the router (`shelfsync::http::ROUTES`), and the operations that need a key say so. Then
//! schemathesis (from the project venv, `scripts/fuzz-deps.sh`) fuzzes every operation but
//! the live streams and must see no 5xx.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shelfsync::http::ROUTES;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(METHOD, path)` of every operation in the document.
fn documented(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        for (method, op) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()), op.clone());
            }
        }
    }
    ops
}

/// The `{name}`s of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

async fn fetch_document(app: &TestApp) -> Value {
    // No key: the document is public.
    let res = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    res.json().await.expect("the document is JSON")
}

#[actix_web::test]
async fn the_document_describes_exactly_the_routes_of_the_router() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;

    // OpenAPI 3, with the parts a client generator needs.
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3."), "openapi {version}");
    assert_eq!(doc["info"]["title"], "shelfsync");
    assert!(doc["info"]["version"].is_string());
    let bearer = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");

    // The router's table and the document name the same (method, path) pairs.
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "a route is listed twice");
    assert!(routes.contains(&("GET".into(), "/openapi.json".into())));
    let ops = documented(&doc);
    let documented: BTreeSet<_> = ops.keys().cloned().collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations the router does not serve: {unrouted:?}"
    );

    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut operation_ids = BTreeSet::new();
    for ((method, path), op) in &ops {
        let name = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{name}: no operationId");
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: operationId {id} is used twice"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{name}: no responses");
        for (status, r) in responses {
            assert!(
                status.len() == 3 && status.parse::<u16>().is_ok(),
                "{name}: status {status}"
            );
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name} {status}: no description"
            );
        }
        let success = responses.keys().any(|s| s.starts_with('2') || s == "101");
        assert!(success, "{name}: no success response");
        // Path parameters: exactly those of the template, each required.
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{name}: path parameter {p}");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(declared, template_params(path), "{name}: path parameters");
        // Request bodies of JSON writes have a schema.
        if let Some(body) = op.get("requestBody") {
            assert!(
                body["content"]["application/json"]["schema"].is_object(),
                "{name}: request body without a JSON schema"
            );
        }
        // Every reference resolves.
        let mut found = Vec::new();
        refs(op, &mut found);
        for r in found {
            let schema = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{name}: reference {r} is not to a schema"));
            assert!(schemas.contains_key(schema), "{name}: {r} does not resolve");
        }
    }
    // The request bodies carry the bounds the handlers enforce.
    let line = &schemas["RawLine"];
    assert_eq!(line["properties"]["qty"]["minimum"], 1, "{line}");
    assert_eq!(line["additionalProperties"], false, "{line}");
    assert!(schemas.contains_key("CreateRequest"));
    assert!(schemas.contains_key("ConfirmRequest"));
    assert!(schemas.contains_key("MovementRequest"));
    assert!(schemas.contains_key("ZoneRequest"));
    assert!(schemas.contains_key("AvailabilityRequest"));
    app.finish().await;
}

/// A request for `(method, path)` with sample parameters and an empty JSON object as body:
/// enough for every handler to refuse or answer without changing anything.
fn probe(app: &TestApp, method: &str, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
    let path = path
        .replace("{outlet}", OUTLET)
        .replace("{sku}", SKU)
        .replace("{pin}", "452010")
        .replace("{id}", &format!("{OUTLET}-AAAAAAAAAAAAAAAAAAAAAA"));
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app
        .http
        .request(method.clone(), format!("{}{path}", app.url));
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        req = req.json(&serde_json::json!({}));
    }
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req
}

/// An operation that refuses a request without a key (401) and accepts the admin key past
/// authentication declares the bearer key, and the operations that declare it do refuse.
#[actix_web::test]
async fn operations_that_need_a_key_declare_it() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let mut public = BTreeSet::new();
    for ((method, path), op) in documented(&doc) {
        let name = format!("{method} {path}");
        // A key is required when every alternative names one (`{}` among them: optional,
        // as on /readyz, whose details only a key gets).
        let declares = op["security"].as_array().is_some_and(|alternatives| {
            alternatives.iter().any(|s| s.get("api_key").is_some())
                && !alternatives
                    .iter()
                    .any(|s| s.as_object().is_some_and(|o| o.is_empty()))
        });
        // Headers only: the live streams answer 200 and would go on forever.
        let without = probe(&app, &method, &path, None).send().await.unwrap();
        let with = probe(&app, &method, &path, Some(ADMIN))
            .send()
            .await
            .unwrap();
        let needs_key = without.status() == StatusCode::UNAUTHORIZED
            && with.status() != StatusCode::UNAUTHORIZED;
        assert!(
            with.status().as_u16() < 500,
            "{name} with the admin key: {}",
            with.status()
        );
        assert_eq!(
            declares,
            needs_key,
            "{name}: declares the bearer key: {declares}; answers {} without a key and {} with one",
            without.status(),
            with.status()
        );
        if !needs_key {
            public.insert(name);
        }
    }
    // Everything under /v1 but the WhatsApp webhook, and /metrics, needs a key; the pages
    // hold no data (their calls carry a key).
    let expected: BTreeSet<String> = [
        "GET /",
        "GET /kitchen",
        "GET /war-room",
        "GET /healthz",
        "GET /readyz",
        "GET /openapi.json",
        "GET /v1/webhooks/whatsapp",
        "POST /v1/webhooks/whatsapp",
    ]
    .map(String::from)
    .into();
    assert_eq!(public, expected, "operations that need no key");
    app.finish().await;
}

/// The venv's schemathesis, or a clear failure.
fn schemathesis() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    assert!(
        bin.is_file(),
        "{} is missing: run `bash scripts/fuzz-deps.sh` (`make test` does)",
        bin.display()
    );
    bin
}

/// Problems of `doc` by the OpenAPI 3.1 meta-schema (the one schemathesis ships), via the
/// venv's Python: empty when it is a valid OpenAPI 3.1 document.
async fn openapi_31_problems(doc: &Value) -> Vec<String> {
    const CHECK: &str = r#"
import json, sys
from schemathesis.specs.openapi.definitions import OPENAPI_31
import jsonschema_rs
doc = json.load(sys.stdin)
for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(doc):
    print(f"{list(e.instance_path)}: {e.message}")
"#;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let mut child = tokio::process::Command::new(python)
        .args(["-c", CHECK])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    let mut stdin = child.stdin.take().unwrap();
    let json = serde_json::to_vec(doc).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &json)
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the OpenAPI 3.1 check did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// What one schemathesis run sent and got, from its NDJSON event stream.
#[derive(Default)]
struct Tally {
    cases: usize,
    /// Operation -> response status -> count.
    statuses: BTreeMap<String, BTreeMap<u16, usize>>,
    /// Checks that failed, as `operation: check`.
    failed_checks: Vec<String>,
}

impl Tally {
    fn read(ndjson: &Path) -> Self {
        let text =
            std::fs::read_to_string(ndjson).unwrap_or_else(|e| panic!("{}: {e}", ndjson.display()));
        let mut tally = Self::default();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).expect("an NDJSON event");
            let Some(finished) = event.get("ScenarioFinished") else {
                continue;
            };
            let recorder = &finished["recorder"];
            let label = recorder["label"].as_str().unwrap_or("?").to_owned();
            let stateful = finished["phase"] == "stateful";
            let cases = recorder["cases"].as_object();
            tally.cases += cases.map_or(0, |c| c.len());
            for (id, interaction) in recorder["interactions"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.iter())
            {
                // By the operation of its case: stateful scenarios hold several.
                let case = &cases.and_then(|c| c.get(id)).unwrap_or(&Value::Null)["value"];
                let op = match (case["method"].as_str(), case["path"].as_str()) {
                    (Some(method), Some(path)) => format!("{method} {path}"),
                    _ => label.clone(),
                };
                let op = if stateful {
                    format!("{op} (stateful)")
                } else {
                    op
                };
                if let Some(status) = interaction["response"]["status_code"].as_u64() {
                    *tally
                        .statuses
                        .entry(op)
                        .or_default()
                        .entry(status as u16)
                        .or_default() += 1;
                }
            }
            for (case, checks) in recorder["checks"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.iter())
            {
                for check in checks.as_array().map(Vec::as_slice).unwrap_or_default() {
                    if check["status"] != "success" {
                        tally
                            .failed_checks
                            .push(format!("{label} [{case}]: {}", check["name"]));
                    }
                }
            }
        }
        tally
    }

    fn server_errors(&self) -> Vec<String> {
        self.statuses
            .iter()
            .flat_map(|(op, s)| {
                s.iter()
                    .filter(|(status, _)| **status >= 500)
                    .map(move |(status, n)| format!("{op}: {n} x {status}"))
            })
            .collect()
    }

    fn print(&self, name: &str) {
        println!(
            "schemathesis ({name}): {} test cases; answers by operation:",
            self.cases
        );
        let routed = |op: &str| {
            let op = op.trim_end_matches(" (stateful)");
            ROUTES.iter().any(|(m, p)| op == format!("{m} {p}"))
        };
        let line = |op: &str, statuses: &BTreeMap<u16, usize>| {
            let s: Vec<_> = statuses.iter().map(|(s, n)| format!("{s} x{n}")).collect();
            println!("  {op:<50} {}", s.join(", "));
        };
        let mut others = BTreeMap::new();
        for (op, statuses) in &self.statuses {
            if routed(op) {
                line(op, statuses);
            } else {
                for (s, n) in statuses {
                    *others.entry(*s).or_default() += n;
                }
            }
        }
        line("(methods a path does not have)", &others);
        for f in &self.failed_checks {
            println!("  FAILED {f}");
        }
    }
}

/// Runs schemathesis on `schema` (a URL or a file) against `app` with API key `key`; prints
/// its output.
async fn run_schemathesis(
    app: &TestApp,
    name: &str,
    schema: &str,
    dir: &Path,
    key: &str,
) -> (bool, Tally) {
    let ndjson = dir.join(format!("{name}.ndjson"));
    let mut cmd = tokio::process::Command::new(schemathesis());
    cmd.current_dir(dir)
        .arg("run")
        .arg(schema)
        .args(["--url", &app.url])
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "50", "--seed", "20251121"])
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--generation-database", "none"])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        // The live streams do not end.
        .args(["--exclude-path", "/v1/stream", "--exclude-path", "/v1/ws"])
        .args(["--report", "ndjson,junit", "--report-dir"])
        .arg(dir)
        .arg("--report-ndjson-path")
        .arg(&ndjson)
        .arg("--report-junit-path")
        .arg(dir.join(format!("{name}.xml")))
        .arg("--no-color")
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("schemathesis finishes within 4 minutes")
        .expect("schemathesis runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let tally = Tally::read(&ndjson);
    tally.print(name);
    println!(
        "schemathesis ({name}): {:.1} s, exit {}, reports in {}",
        started.elapsed().as_secs_f64(),
        output.status,
        dir.display()
    );
    (output.status.success(), tally)
}

/// The first column of a catalogue CSV.
fn catalogue_ids(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("catalogue")
        .join(file);
    let ids: BTreeSet<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    ids.into_iter().map(Value::from).collect()
}

/// The SKUs the catalogue-bound run uses (few, so that carts collide on them).
fn bound_skus() -> Vec<Value> {
    let skus: BTreeSet<String> = [SKU, SKU2, SKU3]
        .into_iter()
        .map(String::from)
        .chain(catalogue_skus(3))
        .collect();
    skus.into_iter().map(Value::from).collect()
}

/// The document with the demo catalogue's outlets, a few SKUs and the zones' PINs as the only
/// values of the request fields and parameters that name them, so that generated requests get
/// past "unknown outlet" and reach holds, routing, movements and zone edits.
fn bound_to_catalogue(doc: &Value) -> Value {
    fn bind(v: &mut Value, values: &BTreeMap<&str, Vec<Value>>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get_mut("properties") {
                    for (name, schema) in props.iter_mut() {
                        if let Some(values) = values.get(name.as_str()) {
                            schema["enum"] = Value::from(values.clone());
                        }
                    }
                }
                let is_param = m.get("in").is_some_and(Value::is_string);
                if let (true, Some(values)) = (
                    is_param,
                    m.get("name")
                        .and_then(Value::as_str)
                        .and_then(|n| values.get(n)),
                ) {
                    m["schema"]["enum"] = Value::from(values.clone());
                }
                m.values_mut().for_each(|x| bind(x, values));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| bind(x, values)),
            _ => {}
        }
    }
    let outlets = catalogue_ids("outlets.csv");
    let skus = bound_skus();
    let pins = catalogue_ids("zones.csv");
    // Movement times the service takes: late, never ahead of its clock.
    let times = ["2025-08-09T09:42:00Z", "2026-01-15T12:00:00.5+05:30"]
        .map(Value::from)
        .to_vec();
    // Lots: a few names, made when a movement may be, expiring well ahead.
    let lots = ["K-1", "K-2"].map(Value::from).to_vec();
    let expiries = ["2030-01-01T00:00:00Z"].map(Value::from).to_vec();
    let values = BTreeMap::from([
        ("outlet", outlets.clone()),
        ("to_outlet", outlets),
        ("sku", skus),
        ("pin", pins),
        ("made_at", times.clone()),
        ("at", times),
        ("lot", lots),
        ("expires_at", expiries),
    ]);
    let mut doc = doc.clone();
    // Parameters, and the request bodies' schemas (not the answers').
    for item in doc["paths"].as_object_mut().unwrap().values_mut() {
        for op in item.as_object_mut().unwrap().values_mut() {
            if let Some(parameters) = op.get_mut("parameters") {
                bind(parameters, &values);
            }
        }
    }
    for name in [
        "AvailabilityRequest",
        "CreateRequest",
        "RawLine",
        "MovementRequest",
        "ZoneRequest",
        "RawZoneOutlet",
    ] {
        let schema = &mut doc["components"]["schemas"][name];
        assert!(schema.is_object(), "the document has a {name} schema");
        bind(schema, &values);
    }
    doc
}

/// Every operation but the live streams, fuzzed twice with the admin key: once by the
/// document as served, once bound to the demo catalogue (with the reservation links, the
/// stateful phase holds, reads, confirms and cancels real reservations). No 5xx, ever.
#[actix_web::test]
async fn schemathesis_finds_no_server_error() {
    schemathesis();
    let mut settings = test_settings();
    let unlimited = shelfsync::settings::BucketSettings {
        per_sec: 1_000_000.0,
        burst: 1_000_000,
    };
    settings.rate_limits.admin = unlimited;
    settings.rate_limits.manager = unlimited;
    settings.rate_limits.unauthenticated = unlimited;
    let app = spawn_app_with(settings).await;
    let ready = eventually(20, || async {
        app.http
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "the service did not become ready");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/schemathesis")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();

    // Stock for the catalogue-bound run to hold, sell and move.
    let outlets = catalogue_ids("outlets.csv");
    let stocked = futures_util::future::join_all(outlets.iter().flat_map(|o| {
        bound_skus()
            .into_iter()
            .map(|sku| {
                let app = &app;
                async move {
                    app.set_stock(o.as_str().unwrap(), sku.as_str().unwrap(), 1000)
                        .await
                }
            })
            .collect::<Vec<_>>()
    }))
    .await;
    assert_eq!(stocked.len(), outlets.len() * bound_skus().len());

    // The document is OpenAPI 3.1 by the specification's meta-schema (and the check sees a
    // broken one).
    let doc = fetch_document(&app).await;
    let problems = openapi_31_problems(&doc).await;
    assert!(problems.is_empty(), "not valid OpenAPI 3.1: {problems:#?}");
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"] = json!(5);
    assert!(!openapi_31_problems(&broken).await.is_empty());

    let served = format!("{}/openapi.json", app.url);
    let (served_ok, served_tally) = run_schemathesis(&app, "served", &served, &dir, ADMIN).await;
    let bound = dir.join("openapi-catalogue.json");
    std::fs::write(&bound, bound_to_catalogue(&doc).to_string()).unwrap();
    let bound = bound.to_str().unwrap();
    let (bound_ok, bound_tally) = run_schemathesis(&app, "catalogue", bound, &dir, ADMIN).await;
    // A key scoped to the Indore outlets, on the same bound document (every outlet of the
    // chain): no 5xx either, and its scope holds both ways.
    let (scoped_ok, scoped_tally) =
        run_schemathesis(&app, "scoped", bound, &dir, MANAGER_INDORE).await;

    for (name, ok, tally) in [
        ("served", served_ok, &served_tally),
        ("catalogue", bound_ok, &bound_tally),
        ("scoped", scoped_ok, &scoped_tally),
    ] {
        let errors = tally.server_errors();
        assert!(errors.is_empty(), "{name}: 5xx answers: {errors:?}");
        assert!(
            tally.failed_checks.is_empty(),
            "{name}: failed checks: {:?}",
            tally.failed_checks
        );
        assert!(ok, "schemathesis ({name}) failed: see its output above");
    }
    // Every operation but the live streams ran (fuzzing a schema by its URL, schemathesis
    // leaves out the document's own operation), and the bound run got past validation into
    // real holds, confirms and movements.
    let expected: BTreeSet<String> = ROUTES
        .iter()
        .filter(|(_, p)| !["/v1/stream", "/v1/ws"].contains(p))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    for tally in [&served_tally, &bound_tally] {
        // (Other methods at these paths are probed too: the router answers them 404.)
        let ran: BTreeSet<String> = tally.statuses.keys().cloned().collect();
        let missing: Vec<_> = expected.difference(&ran).collect();
        assert!(
            missing.is_empty() || missing == ["GET /openapi.json"],
            "operations not fuzzed: {missing:?}"
        );
        assert!(tally.cases >= 10 * expected.len(), "{} cases", tally.cases);
    }
    let got = |op: &str, status: u16| {
        bound_tally
            .statuses
            .get(op)
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    };
    let scoped = |op: &str, status: u16| {
        (scoped_tally.statuses.get(op))
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    };
    assert!(
        scoped("POST /v1/movements", 201) > 0,
        "the scoped key moved no stock at its own outlets"
    );
    assert!(
        scoped("POST /v1/movements", 403) > 0,
        "the scoped key was never refused at another outlet"
    );
    assert!(
        scoped("POST /v1/reservations", 403) > 0,
        "a manager key may not hold"
    );
    assert!(got("POST /v1/reservations", 201) > 0, "no hold was made");
    assert!(got("POST /v1/movements", 201) > 0, "no movement was made");
    // The stateful phase follows a hold's link to confirm it: the confirm reached a real
    // reservation (paid, or refused as already paid, cancelled, re-routed or expired), not 404.
    // Which of those it gets depends on what the fuzzer did to the hold first.
    let confirm = "POST /v1/reservations/{id}/confirm (stateful)";
    assert!(
        [200, 409, 410]
            .iter()
            .map(|s| got(confirm, *s))
            .sum::<usize>()
            > 0,
        "no stateful confirm reached a hold"
    );
    app.finish().await;
}
