//! Keys, roles, validation, size limits and full queues: every bad input gets a clear error
//! and changes nothing.

mod common;

use common::*;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn error_of(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn requests_without_a_valid_key_are_401() {
    let app = spawn_app().await;
    let no_key = app
        .http
        .get(format!("{}/v1/outlets", app.url))
        .send()
        .await
        .unwrap();
    let bad_key = app.get("/v1/outlets", "not-a-configured-key").await;
    let basic = app
        .http
        .get(format!("{}/v1/outlets", app.url))
        .header("Authorization", format!("Basic {STOREFRONT}"))
        .send()
        .await
        .unwrap();
    let metrics = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();

    for res in [no_key, bad_key, basic, metrics] {
        let (status, body) = error_of(res).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "unauthorized");
    }
    let health = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "healthz needs no key");
    app.finish().await;
}

#[actix_web::test]
async fn roles_and_outlet_scopes_are_enforced_with_403() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let mv = |outlet: &str, kind: &str, id: &str| json!({"event_id": id, "outlet": outlet, "sku": SKU, "kind": kind, "qty": 1, "at": "2026-11-21T09:00:00Z"});

    let cases = [
        (
            "storefront may not move stock",
            app.movement(STOREFRONT, mv(OUTLET, "receipt", "e1")).await,
        ),
        (
            "viewer may not move stock",
            app.movement(VIEWER, mv(OUTLET, "receipt", "e2")).await,
        ),
        (
            "pos may not touch another outlet",
            app.movement(POS_VIJAY_NAGAR, mv(OTHER_OUTLET, "sale_counter", "e3"))
                .await,
        ),
        (
            "pos may not count",
            app.movement(POS_VIJAY_NAGAR, mv(OUTLET, "count", "e4"))
                .await,
        ),
        (
            "manager may not touch Bhopal",
            app.movement(MANAGER_INDORE, mv("bhopal-mp-nagar", "receipt", "e5"))
                .await,
        ),
        ("pos may not reserve", {
            app.http
                .post(format!("{}/v1/reservations", app.url))
                .bearer_auth(POS_VIJAY_NAGAR)
                .header("Idempotency-Key", "k")
                .json(&json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}))
                .send()
                .await
                .unwrap()
        }),
        (
            "storefront may not read the ledger",
            app.get(&format!("/v1/ledger?outlet={OUTLET}"), STOREFRONT)
                .await,
        ),
        (
            "pos may not read another outlet's ledger",
            app.get(
                &format!("/v1/ledger?outlet={OTHER_OUTLET}"),
                POS_VIJAY_NAGAR,
            )
            .await,
        ),
        (
            "storefront may not read metrics",
            app.get("/metrics", STOREFRONT).await,
        ),
    ];
    for (what, res) in cases {
        let (status, body) = error_of(res).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(body["error"], "forbidden", "{what}");
    }
    assert_eq!(
        app.stock(OUTLET, SKU).await["on_hand"],
        10,
        "nothing changed"
    );
    assert_eq!(
        app.movement(POS_VIJAY_NAGAR, mv(OUTLET, "sale_counter", "e6"))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.movement(MANAGER_INDORE, mv(OTHER_OUTLET, "count", "e7"))
            .await
            .status(),
        StatusCode::CREATED
    );
    app.finish().await;
}

#[actix_web::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let line = |sku: &str, qty: i64| json!({"outlet": OUTLET, "lines": [{"sku": sku, "qty": qty}]});
    let reservations = [
        ("lines[0].qty", line(SKU, 0)),
        ("lines[0].qty", line(SKU, 10_001)),
        ("lines[0].sku", line("no-such-sweet", 1)),
        ("lines[0].sku", line("bad sku!", 1)),
        (
            "lines[0].qty",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": "two"}]}),
        ),
        (
            "lines[0].sku",
            json!({"outlet": OUTLET, "lines": [{"qty": 1}]}),
        ),
        ("lines", json!({"outlet": OUTLET, "lines": []})),
        (
            "lines[1].sku",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}, {"sku": SKU, "qty": 1}]}),
        ),
        (
            "outlet",
            json!({"outlet": "atlantis", "lines": [{"sku": SKU, "qty": 1}]}),
        ),
        ("outlet", json!({"lines": [{"sku": SKU, "qty": 1}]})),
        (
            "ttl_secs",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 100_000}),
        ),
        (
            "channel",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "channel": "fax"}),
        ),
        (
            "colour",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "colour": "red"}),
        ),
    ];
    for (i, (field, body)) in reservations.into_iter().enumerate() {
        let (status, err) = error_of(app.reserve(&format!("bad-{i}"), body.clone()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["error"], "validation_failed", "{body}");
        assert_eq!(err["field"], field, "{body}");
    }
    let no_key = app
        .http
        .post(format!("{}/v1/reservations", app.url))
        .bearer_auth(STOREFRONT)
        .json(&line(SKU, 1))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(no_key).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Idempotency-Key"))
    );
    let not_json = app
        .http
        .post(format!("{}/v1/reservations", app.url))
        .bearer_auth(STOREFRONT)
        .header("Idempotency-Key", "nj")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mv = |kind: &str, qty: i64, at: &str| json!({"event_id": "m1", "outlet": OUTLET, "sku": SKU, "kind": kind, "qty": qty, "at": at});
    let movements = [
        ("kind", mv("theft", 1, "2026-11-21T09:00:00Z")),
        ("qty", mv("receipt", -1, "2026-11-21T09:00:00Z")),
        ("qty", mv("adjustment", 0, "2026-11-21T09:00:00Z")),
        ("at", mv("receipt", 1, "yesterday")),
        ("to_outlet", mv("transfer", 1, "2026-11-21T09:00:00Z")),
        (
            "to_outlet",
            json!({"event_id": "m1", "outlet": OUTLET, "sku": SKU, "kind": "receipt", "qty": 1, "at": "2026-11-21T09:00:00Z", "to_outlet": OTHER_OUTLET}),
        ),
        (
            "event_id",
            json!({"event_id": "", "outlet": OUTLET, "sku": SKU, "kind": "receipt", "qty": 1, "at": "2026-11-21T09:00:00Z"}),
        ),
    ];
    for (field, body) in movements {
        let (status, err) = error_of(app.movement(ADMIN, body.clone()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["field"], field, "{body}");
    }
    let (status, err) = error_of(
        app.get(&format!("/v1/ledger?outlet={OUTLET}&limit=5000"), VIEWER)
            .await,
    )
    .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );

    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(10), Some(0)),
        "nothing changed"
    );
    app.finish().await;
}

#[actix_web::test]
async fn unknown_things_are_404() {
    let app = spawn_app().await;
    let cases = [
        app.get("/v1/outlets/atlantis/stock", VIEWER).await,
        app.get(&format!("/v1/outlets/{OUTLET}/stock/no-such-sweet"), VIEWER)
            .await,
        app.get("/v1/reservations/not-a-reservation", STOREFRONT)
            .await,
        app.get(
            &format!("/v1/reservations/{OUTLET}-AAAAAAAAAAAAAAAAAAAAAA"),
            STOREFRONT,
        )
        .await,
        app.post(
            &format!("/v1/reservations/{OUTLET}-AAAAAAAAAAAAAAAAAAAAAA/cancel"),
            STOREFRONT,
            json!({}),
        )
        .await,
        app.get("/v2/anything", VIEWER).await,
    ];
    for res in cases {
        let (status, body) = error_of(res).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not_found");
    }
    app.finish().await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app().await;
    let huge = json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "customer_ref": "x".repeat(70_000)});

    let (status, body) = error_of(app.reserve("huge", huge).await).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large");
    app.finish().await;
}

#[actix_web::test]
async fn a_full_outlet_queue_answers_503_and_holds_nothing_for_those_requests() {
    let mut settings = test_settings();
    settings.outlet.pending_max = 4;
    settings.outlet.batch_size_max = 1;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 1000).await;

    let buyers = (0..300).map(|i| {
        let app = &app;
        async move {
            let res = app
                .reserve(
                    &format!("q-{i}"),
                    json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
                )
                .await;
            error_of(res).await
        }
    });
    let answers = join_all(buyers).await;

    let held = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(
        held + refused.len(),
        300,
        "every request is either held or refused"
    );
    assert!(
        !refused.is_empty(),
        "a queue of 4 overflows under 300 concurrent buyers"
    );
    assert!(refused.iter().all(|(_, b)| b["error"] == "unavailable"));
    assert_eq!(
        app.stock(OUTLET, SKU).await["reserved"],
        held as i64,
        "refused requests hold nothing"
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_full_outbox_refuses_writes_with_503_and_changes_nothing() {
    let mut settings = test_settings();
    settings.ledger.outbox_max = 0;
    let app = spawn_app_with(settings).await;

    let count = app.movement(ADMIN, json!({"event_id": "c1", "outlet": OUTLET, "sku": SKU, "kind": "count", "qty": 5, "at": "2026-11-21T09:00:00Z"})).await;
    let hold = app
        .reserve(
            "h1",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;

    for res in [count, hold] {
        let (status, body) = error_of(res).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "unavailable");
    }
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 0);
    assert_eq!(
        redis_snapshot(&app.settings, OUTLET).await.seq,
        0,
        "Redis has nothing"
    );
    app.finish().await;
}

#[actix_web::test]
async fn readyz_and_metrics_report_dependencies_and_outcomes() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 1).await;
    app.hold(OUTLET, SKU, 1, 60).await;
    let _ = app
        .reserve(
            "m2",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;

    let ready: Value = app
        .http
        .get(format!("{}/readyz", app.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();

    // Alone on its prefix, the process owns every outlet of the catalogue.
    let mut outlets: Vec<String> = app
        .get("/v1/outlets", VIEWER)
        .await
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    outlets.sort();
    assert_eq!(
        ready,
        json!({"status": "ready", "redis": "ok", "mongo": "ok", "mqtt": "ok",
               "node": "shelfsync", "owns": outlets})
    );
    assert!(
        metrics.contains(r#"shelfsync_reservations_total{op="reserve",outcome="held"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"shelfsync_reservations_total{op="reserve",outcome="out_of_stock"} 1"#)
    );
    assert!(
        metrics.contains(r#"route="/v1/reservations""#),
        "latency per route"
    );
    assert!(metrics.contains("shelfsync_ledger_documents_total"));
    app.finish().await;
}

#[actix_web::test]
async fn readyz_names_the_dependency_that_is_down() {
    let mut settings = test_settings();
    settings.mqtt.port = 1; // nothing listens there
    let app = spawn_app_with(settings).await;

    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();

    let (status, body) = error_of(res).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["redis"], "ok");
    assert!(body["mqtt"].as_str().unwrap().starts_with("down"), "{body}");
    app.finish().await;
}

#[actix_web::test]
async fn a_burst_over_a_keys_limit_gets_429_with_retry_after_and_other_keys_go_on() {
    let mut settings = test_settings();
    settings.rate_limits.viewer = shelfsync::settings::BucketSettings {
        per_sec: 0.01,
        burst: 3,
    };
    let app = spawn_app_with(settings).await;

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let res = app.get("/v1/outlets", VIEWER).await;
        statuses.push(res.status().as_u16());
        if res.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            limited = Some(res);
        }
    }

    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let limited = limited.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (90..=100).contains(&retry_after),
        "one token takes 100 s at 0.01 per second: {retry_after}"
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        app.get("/v1/outlets", STOREFRONT).await.status(),
        StatusCode::OK,
        "each key has its own bucket"
    );
    app.finish().await;
}

/// Every authenticated route × every role, at an outlet inside the scoped keys' outlets and
/// at one outside them: no key is 401, a role the route is not for (or a scoped key at an
/// outlet not its own) is 403, and a role it is for gets past the door (whatever the request
/// then earns).
#[actix_web::test]
async fn the_full_role_by_route_matrix() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 100).await;
    let hold = app.hold(OUTLET, SKU, 1, 300).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    // Outside both scoped keys' outlets (the Indore manager's and the Vijay Nagar POS's).
    let far = "bhopal-arera-colony";
    app.set_stock(far, SKU, 100).await;
    let far_hold = app.hold(far, SKU, 1, 300).await;
    let far_id = far_hold["id"].as_str().unwrap().to_owned();
    let roles = [
        ("public", PUBLIC),
        ("storefront", STOREFRONT),
        ("pos", POS_VIJAY_NAGAR),
        ("manager", MANAGER_INDORE),
        ("viewer", VIEWER),
        ("admin", ADMIN),
    ];
    const ALL: &[&str] = &["public", "storefront", "pos", "manager", "viewer", "admin"];
    let stock_path = format!("/v1/outlets/{OUTLET}/stock");
    let sku_path = format!("/v1/outlets/{OUTLET}/stock/{SKU}");
    let res_path = format!("/v1/reservations/{id}");
    let confirm_path = format!("/v1/reservations/{id}/confirm");
    let cancel_path = format!("/v1/reservations/{id}/cancel");
    let ledger_path = format!("/v1/ledger?outlet={OUTLET}");
    let far_stock_path = format!("/v1/outlets/{far}/stock");
    let far_res_path = format!("/v1/reservations/{far_id}");
    let far_confirm_path = format!("/v1/reservations/{far_id}/confirm");
    let far_cancel_path = format!("/v1/reservations/{far_id}/cancel");
    let far_ledger_path = format!("/v1/ledger?outlet={far}");
    let far_stream_path = format!("/v1/stream?outlets={far}");
    let far_ws_path = format!("/v1/ws?outlets={far}");
    let cart = json!({"lines": [{"sku": SKU, "qty": 1}]});
    let routes: Vec<(&str, &str, Option<Value>, &[&str])> = vec![
        ("GET", "/v1/outlets", None, ALL),
        ("GET", &stock_path, None, ALL),
        ("GET", &sku_path, None, ALL),
        ("POST", "/v1/availability", Some(cart.clone()), ALL),
        ("GET", "/v1/zones", None, ALL),
        ("GET", "/v1/zones/452010", None, ALL),
        (
            "PUT",
            "/v1/zones/452099",
            Some(json!({"outlets": [{"outlet": OUTLET, "cost": 10}]})),
            &["admin"],
        ),
        (
            "POST",
            "/v1/reservations",
            Some(json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]})),
            &["storefront", "admin"],
        ),
        (
            "GET",
            &res_path,
            None,
            &["storefront", "manager", "viewer", "admin"],
        ),
        (
            "POST",
            &confirm_path,
            Some(json!({"payment_ref": "pay-m"})),
            &["storefront", "admin"],
        ),
        (
            "POST",
            &cancel_path,
            Some(json!({})),
            &["storefront", "admin"],
        ),
        (
            "POST",
            "/v1/movements",
            Some(json!({"event_id": "m-1", "outlet": OUTLET, "sku": SKU,
            "kind": "receipt", "qty": 1, "at": "2026-11-21T09:00:00Z"})),
            &["pos", "manager", "admin"],
        ),
        (
            "GET",
            &ledger_path,
            None,
            &["pos", "manager", "viewer", "admin"],
        ),
        ("GET", "/metrics", None, &["manager", "viewer", "admin"]),
        ("GET", "/v1/stream", None, ALL),
        ("GET", "/v1/ws", None, ALL),
        // The outlet outside the scoped keys': stock is chain-wide for every role ("this
        // other outlet has it"); reservations, movements and the ledger are not.
        ("GET", &far_stock_path, None, ALL),
        (
            "POST",
            "/v1/availability",
            Some(json!({"outlets": [far], "lines": [{"sku": SKU, "qty": 1}]})),
            ALL,
        ),
        (
            "GET",
            &far_res_path,
            None,
            &["storefront", "viewer", "admin"],
        ),
        (
            "POST",
            &far_confirm_path,
            Some(json!({"payment_ref": "pay-far"})),
            &["storefront", "admin"],
        ),
        (
            "POST",
            &far_cancel_path,
            Some(json!({})),
            &["storefront", "admin"],
        ),
        (
            "POST",
            "/v1/movements",
            Some(json!({"event_id": "m-far", "outlet": far, "sku": SKU,
            "kind": "receipt", "qty": 1, "at": "2026-11-21T09:00:00Z"})),
            &["admin"],
        ),
        ("GET", &far_ledger_path, None, &["viewer", "admin"]),
        ("GET", &far_stream_path, None, ALL),
        ("GET", &far_ws_path, None, ALL),
    ];
    let send = |method: &str, path: &str, key: Option<&str>, body: &Option<Value>| {
        let url = format!("{}{path}", app.url);
        let mut req = match method {
            "GET" => app.http.get(url),
            "PUT" => app.http.put(url),
            _ => app.http.post(url),
        };
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .timeout(std::time::Duration::from_secs(5))
            .send()
    };
    for (method, path, body, allowed) in &routes {
        let none = send(method, path, None, body).await.unwrap();
        assert_eq!(
            none.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a key"
        );
        for (role, key) in roles {
            // Headers are enough: a stream's body is never read.
            let status = send(method, path, Some(key), body).await.unwrap().status();
            if allowed.contains(&role) {
                assert!(
                    status.is_success() || status.is_client_error(),
                    "{method} {path} as {role}: {status}"
                );
                assert!(
                    ![401, 403, 429].contains(&status.as_u16()),
                    "{method} {path} as {role}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {role}");
            }
        }
    }
    app.finish().await;
}
