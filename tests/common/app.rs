//! A real shelfsync on a free port, its HTTP client, and its metrics.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use shelfsync::{Application, Settings};

use super::{cleanup, eventually, test_settings, ADMIN, STOREFRONT, VIEWER};

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    handle: shelfsync::app::AppHandle,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    _cleanup: CleanupOnPanic,
}

/// A test that panics never reaches its `finish`: what it left on the shared servers (its
/// Redis prefix, its database) is removed here, on a runtime of its own, since the test's
/// runtime is unwinding.
struct CleanupOnPanic(Settings);

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let settings = self.0.clone();
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), cleanup(&settings)).await
            })
        })
        .join();
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!("cleaning up after a panicking test failed; its prefix and database stay");
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    shelfsync::init_tracing();
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    // Where it listens: loopback, or a test link's address (`netns`).
    let url = format!("http://{}:{}", settings.http.host, app.port());
    let handle = app.handle();
    let done = actix_web::rt::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        url,
        http,
        _cleanup: CleanupOnPanic(settings.clone()),
        settings,
        handle,
        done,
    }
}

impl TestApp {
    /// Graceful stop: requests finish, actors drain, every outbox reaches the ledger.
    pub async fn stop(self) -> Settings {
        self.handle.stop().await;
        self.done.await.expect("app task").expect("clean shutdown");
        self.settings
    }

    /// Runs a reconciler pass now.
    pub async fn reconcile(&self) -> shelfsync::actors::reconciler::PassReport {
        self.handle.reconcile().await.expect("reconciler pass")
    }

    /// Stops gracefully, then removes what the test left on the shared servers.
    pub async fn finish(self) {
        let settings = self.stop().await;
        cleanup(&settings).await;
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Response {
        self.http
            .put(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn reserve(&self, idem: &str, body: Value) -> Response {
        self.http
            .post(format!("{}/v1/reservations", self.url))
            .bearer_auth(STOREFRONT)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Holds `qty` of `sku` at `outlet`; panics unless 201. Returns the reservation.
    pub async fn hold(&self, outlet: &str, sku: &str, qty: i64, ttl_secs: i64) -> Value {
        let idem = uuid::Uuid::new_v4().to_string();
        let body =
            json!({"outlet": outlet, "lines": [{"sku": sku, "qty": qty}], "ttl_secs": ttl_secs});
        let res = self.reserve(&idem, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    pub async fn movement(&self, key: &str, body: Value) -> Response {
        self.post("/v1/movements", key, body).await
    }

    /// Confirms a reservation (storefront key).
    pub async fn confirm(&self, id: &str, payment_ref: &str) -> Response {
        let path = format!("/v1/reservations/{id}/confirm");
        self.post(&path, STOREFRONT, json!({"payment_ref": payment_ref}))
            .await
    }

    /// Cancels a reservation (storefront key).
    pub async fn cancel(&self, id: &str) -> Response {
        let path = format!("/v1/reservations/{id}/cancel");
        self.post(&path, STOREFRONT, json!({})).await
    }

    /// A movement (admin key) that must be applied: its `201` answer.
    pub async fn moved(&self, body: Value) -> Value {
        let res = self.movement(ADMIN, body).await;
        let status = res.status();
        let answer: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer
    }

    /// Two weeks of counter sales of `sku` at `outlet`, 6 in every hour but this one, with their
    /// own times, leaving `left` units loose.
    pub async fn six_an_hour(&self, outlet: &str, sku: &str, left: i64) {
        // Not in an hour's last 2 minutes: the hour the sales leave empty stays the current
        // one (out of the fit) while the test reads its forecasts.
        let into_hour = shelfsync::domain::now_ms() % 3_600_000;
        if into_hour > 3_480_000 {
            tokio::time::sleep(Duration::from_millis((3_601_000 - into_hour) as u64)).await;
        }
        let now = shelfsync::domain::now_ms();
        let hours = 330;
        self.set_stock(outlet, sku, 6 * hours + left).await;
        let lines: Vec<Value> = (1..=hours)
            .map(|k| json!({"event_id": format!("past-{outlet}-{sku}-{k}"), "outlet": outlet, "sku": sku,
                "kind": "sale_counter", "qty": 6, "at": shelfsync::domain::rfc3339_ms(now - k * 3_600_000)}))
            .collect();
        let res = self
            .post("/v1/movements/bulk", ADMIN, json!({ "lines": lines }))
            .await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        // In the ledger before anything reads the forecast (a plan keeps it a few minutes).
        let durable = eventually(30, || async {
            let lag: Value = self
                .get("/v1/ledger/lag", VIEWER)
                .await
                .json()
                .await
                .unwrap();
            (lag["outlets"].as_array().unwrap().iter()).all(|o| o["entries"] == 0)
        })
        .await;
        assert!(durable, "the sales did not reach the ledger");
    }

    /// Sets on_hand by a `count` movement (admin) and waits for its durable answer.
    pub async fn set_stock(&self, outlet: &str, sku: &str, qty: i64) -> Value {
        let body = json!({"event_id": format!("count-{}", uuid::Uuid::new_v4().simple()), "outlet": outlet,
            "sku": sku, "kind": "count", "qty": qty, "at": "2026-11-21T09:00:00Z"});
        let res = self.movement(ADMIN, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    pub async fn stock(&self, outlet: &str, sku: &str) -> Value {
        let res = self
            .get(&format!("/v1/outlets/{outlet}/stock/{sku}"), VIEWER)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    pub async fn reservation(&self, id: &str) -> Value {
        let res = self
            .get(&format!("/v1/reservations/{id}"), STOREFRONT)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

/// The value of one sample of the service's `/metrics`, named with its labels in any order
/// (`shelfsync_mqtt_acks_total{outcome="sent"}`); 0 when it is not exposed (yet).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", VIEWER).await.text().await.unwrap();
    sample(&text, series)
}

/// The value of one sample in a Prometheus text exposition (see `metric`).
pub fn sample(text: &str, series: &str) -> f64 {
    // "name{a="x",b="y"}" -> (name, sorted labels)
    fn key(series: &str) -> (String, Vec<String>) {
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let mut labels: Vec<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        labels.sort();
        (name.to_owned(), labels)
    }
    let wanted = key(series);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (s, value) = l.rsplit_once(' ')?;
            (key(s) == wanted).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}
