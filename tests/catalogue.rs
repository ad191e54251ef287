//! The catalogue at chain scale: SKU and outlet edits while running, similar items on 409,
//! bulk movements (JSON and CSV), exports and the command line's import and export.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shelfsync::domain::{OutletId, Sku};
use shelfsync::mqtt::topics::Topics;

const KITCHEN: &str = "central-kitchen-indore";

async fn put_sku(app: &TestApp, sku: &str, body: Value) -> Value {
    let res = app.put(&format!("/v1/skus/{sku}"), ADMIN, body).await;
    assert_eq!(res.status(), StatusCode::OK, "PUT /v1/skus/{sku}");
    res.json().await.unwrap()
}

async fn bulk(app: &TestApp, key: &str, content_type: &str, body: String) -> (StatusCode, Value) {
    let res = app
        .http
        .post(format!("{}/v1/movements/bulk", app.url))
        .bearer_auth(key)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

/// Every ledger document of `outlet`, through `GET /v1/ledger`'s pages.
async fn ledger_pages(app: &TestApp, outlet: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0u64;
    loop {
        let res = app
            .get(
                &format!("/v1/ledger?outlet={outlet}&after_seq={after}&limit=1000"),
                VIEWER,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let page: Value = res.json().await.unwrap();
        all.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_after_seq"].as_u64() {
            Some(n) => after = n,
            None => return all,
        }
    }
}

#[actix_web::test]
async fn a_sku_added_while_running_is_held_and_streamed_without_a_restart() {
    let app = spawn_app().await;
    let new = "diwali-hamper-1kg";
    // Not in the CSV: a stream or a movement naming it is refused.
    let refused = SseClient::connect(&app, &format!("skus={new}"), VIEWER).await;
    assert_eq!(refused.err(), Some(StatusCode::UNPROCESSABLE_ENTITY));

    let added = put_sku(
        &app,
        new,
        json!({"name": "Diwali Hamper 1 kg", "category": "hampers", "shelf_life_days": 20}),
    )
    .await;
    assert_eq!(added["version"], 1);
    assert_eq!(added["status"], "active");

    let mut sse = SseClient::connect(&app, &format!("outlets={OUTLET}&skus={new}"), VIEWER)
        .await
        .expect("the new SKU is a valid filter at once");
    assert_eq!(sse.next(5).await.unwrap().event, "snapshot");
    let receipt = json!({"event_id": "hamper-in-1", "outlet": OUTLET, "sku": new,
        "kind": "receipt", "qty": 10, "at": recent_at()});
    assert_eq!(
        app.movement(ADMIN, receipt).await.status(),
        StatusCode::CREATED
    );
    let hold = app.hold(OUTLET, new, 3, 300).await;
    assert_eq!(hold["status"], "held");

    let mut seen = Vec::new();
    while let Some(e) = sse.next(5).await {
        if e.event == "stock" {
            seen.push((e.data["on_hand"].clone(), e.data["reserved"].clone()));
            if e.data["reserved"] == 3 {
                break;
            }
        }
    }
    assert_eq!(seen, vec![(json!(10), json!(0)), (json!(10), json!(3))]);

    let skus: Value = app
        .get("/v1/skus?category=hampers", PUBLIC)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        skus,
        json!([{"sku": new, "name": "Diwali Hamper 1 kg", "category": "hampers",
            "shelf_life_days": 20, "status": "active", "version": 1}])
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_sku_edit_made_through_one_process_reaches_another_within_its_refresh() {
    let (settings_a, settings_b) = two_nodes();
    let a = spawn_app_with(settings_a).await;
    let b = spawn_app_with(settings_b).await;
    let new = "gajak-box-500g";
    let body = json!({"name": "Gajak Box 500 g", "category": "sweets", "shelf_life_days": 30});
    put_sku(&a, new, body).await;

    let seen = eventually(5, || async {
        b.get(&format!("/v1/skus/{new}"), VIEWER).await.status() == StatusCode::OK
    })
    .await;
    assert!(seen, "the other process did not read the edit");
    let mut sse = SseClient::connect(&b, &format!("skus={new}"), VIEWER)
        .await
        .expect("the other process takes the new SKU as a stream filter");
    assert_eq!(sse.next(5).await.unwrap().event, "snapshot");
    // A retirement reaches it too.
    let body = json!({"name": "Gajak Box 500 g", "category": "sweets", "status": "retired"});
    put_sku(&a, new, body).await;
    let retired = eventually(5, || async {
        let info: Value = b
            .get(&format!("/v1/skus/{new}"), VIEWER)
            .await
            .json()
            .await
            .unwrap();
        info["status"] == "retired" && info["version"] == 2
    })
    .await;
    assert!(retired, "the other process did not read the retirement");
    b.stop().await;
    a.finish().await;
}

async fn put_outlet(app: &TestApp, outlet: &str, body: Value) -> Value {
    let res = app.put(&format!("/v1/outlets/{outlet}"), ADMIN, body).await;
    assert_eq!(res.status(), StatusCode::OK, "PUT /v1/outlets/{outlet}");
    res.json().await.unwrap()
}

fn receipt(event_id: &str, outlet: &str, sku: &str, qty: i64) -> Value {
    json!({"event_id": event_id, "outlet": outlet, "sku": sku, "kind": "receipt", "qty": qty,
        "at": recent_at()})
}

#[actix_web::test]
async fn an_outlet_added_while_running_takes_stock_holds_pos_sales_and_zones_without_a_restart() {
    let mut settings = test_settings();
    // The CSV's 13 and two more.
    settings.catalogue.outlets_max = 15;
    let app = spawn_app_with(settings).await;
    let new = "jabalpur-napier-town";
    // Not in the CSV: a movement or a stream naming it is refused.
    let before = app
        .movement(ADMIN, receipt("jabalpur-in-0", new, SKU, 1))
        .await;
    assert_eq!(before.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = SseClient::connect(&app, &format!("outlets={new}"), VIEWER).await;
    assert_eq!(refused.err(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    // Only an admin edits the catalogue; a bad body changes nothing.
    let body = json!({"name": "Napier Town", "city": "Jabalpur", "kind": "outlet"});
    let res = app
        .put(&format!("/v1/outlets/{new}"), MANAGER_INDORE, body.clone())
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let bad = json!({"name": "Napier\nTown", "city": "Jabalpur", "kind": "outlet"});
    let res = app.put(&format!("/v1/outlets/{new}"), ADMIN, bad).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "name");
    let long = "x".repeat(42);
    let res = app
        .put(&format!("/v1/outlets/{long}"), ADMIN, body.clone())
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.get(&format!("/v1/outlets/{new}"), VIEWER)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let added = put_outlet(&app, new, body.clone()).await;
    // Owned and loaded when the PUT answers.
    let res = app
        .movement(ADMIN, receipt("jabalpur-in-1", new, SKU, 10))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        added,
        json!({"id": new, "name": "Napier Town", "city": "Jabalpur", "kind": "outlet", "version": 1})
    );
    assert_eq!(
        put_outlet(&app, new, body).await["version"],
        1,
        "the same edit keeps its version"
    );
    // A shop does not become a kitchen.
    let kitchen = json!({"name": "Napier Town", "city": "Jabalpur", "kind": "kitchen"});
    let res = app.put(&format!("/v1/outlets/{new}"), ADMIN, kitchen).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "kind");
    let outlets: Value = app.get("/v1/outlets", VIEWER).await.json().await.unwrap();
    assert!(
        outlets.as_array().unwrap().iter().any(|o| o["id"] == new),
        "{outlets}"
    );
    // One place is left under catalogue.outlets_max: of two outlets added at once, one is
    // refused.
    let (katni, satna) = tokio::join!(
        app.put(
            "/v1/outlets/katni-station",
            ADMIN,
            json!({"name": "Katni", "city": "Katni", "kind": "outlet"})
        ),
        app.put(
            "/v1/outlets/satna-civil-lines",
            ADMIN,
            json!({"name": "Civil Lines", "city": "Satna", "kind": "kitchen"})
        ),
    );
    let mut statuses = vec![katni.status(), satna.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY]);
    let refused = if katni.status() == StatusCode::OK {
        satna
    } else {
        katni
    };
    let err: Value = refused.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("outlets_max"),
        "{err}"
    );
    let outlets: Value = app.get("/v1/outlets", VIEWER).await.json().await.unwrap();
    assert_eq!(outlets.as_array().unwrap().len(), 15);

    // Streamed and held like any other.
    let mut sse = SseClient::connect(&app, &format!("outlets={new}&skus={SKU}"), VIEWER)
        .await
        .expect("the new outlet is a valid filter at once");
    assert_eq!(sse.next(5).await.unwrap().event, "snapshot");
    let hold = app.hold(new, SKU, 3, 300).await;
    assert_eq!(hold["status"], "held");
    let mut seen = Vec::new();
    while let Some(e) = sse.next(5).await {
        if e.event == "stock" {
            seen.push((e.data["on_hand"].clone(), e.data["reserved"].clone()));
            if e.data["reserved"] == 3 {
                break;
            }
        }
    }
    assert_eq!(seen, vec![(json!(10), json!(3))]);

    // Its POS sells over MQTT, and its retained stock is published.
    assert!(mqtt_ready(&app).await);
    let topics = Topics::new(&app.settings.mqtt.topic_prefix);
    let mut watcher = MqttClient::connect(app.settings.mqtt.port).await;
    let stock_topic = topics.stock(
        &OutletId::parse("o", new).unwrap(),
        &Sku::parse("s", SKU).unwrap(),
    );
    watcher.subscribe(&stock_topic).await;
    let pos = MqttClient::connect(app.settings.mqtt.port).await;
    let sale = json!({"event_id": "jabalpur-pos-1", "sku": SKU, "kind": "sale_counter", "qty": 1,
        "at": recent_at()});
    pos.publish(&topics.pos(new), sale.to_string()).await;
    let published = watcher
        .wait_for(10, |r| r.topic == stock_topic && r.payload["on_hand"] == 9)
        .await;
    assert!(published.is_some(), "{:?}", watcher.drain());

    // A delivery zone may name it, and routing follows.
    let pin = "462011";
    let zone = json!({"outlets": [{"outlet": new, "cost": 10}]});
    assert_eq!(
        app.put(&format!("/v1/zones/{pin}"), ADMIN, zone)
            .await
            .status(),
        StatusCode::OK
    );
    let routed = app
        .reserve(
            &uuid::Uuid::new_v4().to_string(),
            json!({"pin": pin, "lines": [{"sku": SKU, "qty": 2}], "ttl_secs": 300}),
        )
        .await;
    assert_eq!(routed.status(), StatusCode::CREATED);
    let routed: Value = routed.json().await.unwrap();
    assert!(routed["id"].as_str().unwrap().starts_with(new), "{routed}");
    // The reconciler audits it against its ledger.
    let report = app.reconcile().await;
    let audited = report.outlets.iter().find(|o| o.outlet.as_str() == new);
    let audited = audited.expect("the reconciler passes over the new outlet");
    assert!(
        audited.drift.is_empty() && audited.skipped.is_none(),
        "{audited:?}"
    );

    // A rename is the next version; after a restart the outlet and its stock are there, and a
    // rebuild from the ledger covers it.
    let renamed = json!({"name": "Napier Town Zone 1", "city": "Jabalpur", "kind": "outlet"});
    assert_eq!(put_outlet(&app, new, renamed).await["version"], 2);
    let settings = app.stop().await;
    wipe_redis(&settings).await;
    let out = cli(&settings, &["rebuild"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(new),
        "the rebuild covers the added outlet: {text}"
    );
    let app = spawn_app_with(settings).await;
    let info: Value = app
        .get(&format!("/v1/outlets/{new}"), VIEWER)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "Napier Town Zone 1");
    let history: Vec<i64> = info["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_i64().unwrap())
        .collect();
    assert_eq!(history, [1, 2]);
    let stock = app.stock(new, SKU).await;
    assert_eq!(
        (stock["on_hand"].clone(), stock["reserved"].clone()),
        (json!(9), json!(5))
    );
    app.finish().await;
}

/// Whether the process owns `outlet`, by its `/readyz`.
async fn owns(app: &TestApp, outlet: &str) -> bool {
    let ready: Value = app.get("/readyz", ADMIN).await.json().await.unwrap();
    ready["owns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == outlet)
}

/// `two_nodes()`, and an outlet id starting with `stem` that rendezvous gives to node-b.
fn two_nodes_and_an_outlet_for_b(stem: &str) -> (shelfsync::Settings, shelfsync::Settings, String) {
    let (a, b) = two_nodes();
    let nodes = [a.cluster.node_id.clone(), b.cluster.node_id.clone()];
    let outlet = (0..)
        .map(|i| format!("{stem}-{i}"))
        .find(|o| {
            let id = OutletId::parse("o", o).unwrap();
            shelfsync::actors::ownership::owner_of(&nodes, &id) == Some(nodes[1].as_str())
        })
        .unwrap();
    (a, b, outlet)
}

#[actix_web::test]
async fn an_outlet_added_through_one_process_is_owned_by_the_other_and_served_by_both() {
    // An id rendezvous gives to node-b: the process that did not take the edit must learn
    // of the outlet, make room for it and take its lease.
    let (settings_a, settings_b, new) = two_nodes_and_an_outlet_for_b("gwalior");
    let a = spawn_app_with(settings_a).await;
    let b = spawn_app_with(settings_b).await;
    let body = json!({"name": "Gwalior City Centre", "city": "Gwalior", "kind": "outlet"});
    put_outlet(&a, &new, body).await;

    let taken = eventually(10, || async { owns(&b, &new).await }).await;
    assert!(taken, "node-b did not take the new outlet's lease");
    assert!(!owns(&a, &new).await, "node-a owns it too");
    // A receipt through the process that does not own it is forwarded to the one that does,
    // and both read the stock (node-a through the follower).
    let res = a
        .movement(ADMIN, receipt("gwalior-in-1", &new, SKU, 6))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(b.stock(&new, SKU).await["on_hand"], 6);
    let followed = eventually(5, || async { a.stock(&new, SKU).await["on_hand"] == 6 }).await;
    assert!(followed, "node-a's view did not follow the new outlet");
    b.stop().await;
    a.finish().await;
}

#[actix_web::test]
async fn a_pos_sale_for_an_outlet_added_elsewhere_lands_once_where_the_catalogue_was_not_read_yet()
{
    // node-b owns the new outlet but would read the edit only in an hour: the sale that
    // reaches it first must make it read the edits, not reject the sale as for an unknown
    // outlet (node-a, which knows the outlet, would then drop its own copy as decided).
    let (settings_a, mut settings_b, new) = two_nodes_and_an_outlet_for_b("sagar");
    settings_b.catalogue.refresh_ms = 3_600_000;
    let a = spawn_app_with(settings_a).await;
    let b = spawn_app_with(settings_b).await;
    assert!(mqtt_ready(&a).await && mqtt_ready(&b).await);
    let body = json!({"name": "Sagar Katra", "city": "Sagar", "kind": "outlet"});
    put_outlet(&a, &new, body).await;

    let pos = MqttClient::connect(a.settings.mqtt.port).await;
    let topics = Topics::new(&a.settings.mqtt.topic_prefix);
    let sale = json!({"event_id": "sagar-pos-1", "sku": SKU, "kind": "sale_counter", "qty": 2,
        "at": recent_at()});
    pos.publish(&topics.pos(&new), sale.to_string()).await;
    // `None` while the process does not know the outlet (404).
    let on_hand = |app: &TestApp| {
        let path = format!("/v1/outlets/{new}/stock/{SKU}");
        let (http, url) = (app.http.clone(), app.url.clone());
        async move {
            let res = http
                .get(format!("{url}{path}"))
                .bearer_auth(VIEWER)
                .send()
                .await;
            let body: Value = res.ok()?.json().await.ok()?;
            body["on_hand"].as_i64()
        }
    };
    let sold = eventually(15, || async {
        on_hand(&b).await == Some(-2) && on_hand(&a).await == Some(-2)
    })
    .await;
    assert!(sold, "the sale did not land: {:?}", on_hand(&b).await);
    assert!(owns(&b, &new).await && !owns(&a, &new).await);
    assert!(documents(&a.settings, "rejected").await.is_empty());
    let sales: Vec<Value> = ledger_pages(&b, &new)
        .await
        .into_iter()
        .filter(|d| d["kind"] == "sale_counter")
        .collect();
    assert_eq!(sales.len(), 1, "{sales:?}");
    b.stop().await;
    a.finish().await;
}

#[actix_web::test]
async fn an_edit_passes_over_a_version_its_writer_abandoned_but_not_one_in_flight() {
    let app = spawn_app().await;
    let versions = database(&app.settings)
        .await
        .collection::<mongodb::bson::Document>("sku_versions");
    let now = shelfsync::domain::now_ms();
    // Version 1 of SKU was written a minute ago and never made current (its writer failed
    // between the version row and the current row).
    let half_written = |at_ms: i64, sku: &str| {
        mongodb::bson::doc! {"_id": format!("{sku}:1"), "sku": sku, "version": 1_i64,
        "name": "Half Written 1 kg", "category": "sweets", "shelf_life_days": null,
        "status": "active", "at_ms": at_ms, "by": "test"}
    };
    versions
        .insert_one(half_written(now - 60_000, SKU))
        .await
        .unwrap();
    let body = json!({"name": "Kaju Katli Premium 1 kg", "category": "sweets"});
    let edited = put_sku(&app, SKU, body).await;
    assert_eq!(edited["version"], 2, "{edited}");
    let info: Value = app
        .get(&format!("/v1/skus/{SKU}"), VIEWER)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "Kaju Katli Premium 1 kg");
    let history: Vec<(i64, String)> = (info["history"].as_array().unwrap().iter())
        .map(|h| {
            (
                h["version"].as_i64().unwrap(),
                h["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (1, "Half Written 1 kg".to_owned()),
            (2, "Kaju Katli Premium 1 kg".to_owned())
        ]
    );
    // A version row written just now may be an edit in flight in another process: a
    // different edit of that SKU is told to read it and try again.
    versions.insert_one(half_written(now, SKU2)).await.unwrap();
    let res = app
        .put(
            &format!("/v1/skus/{SKU2}"),
            ADMIN,
            json!({"name": "Other", "category": "sweets"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    app.finish().await;
}

#[actix_web::test]
async fn a_movement_over_http_for_an_outlet_added_elsewhere_lands_where_the_catalogue_was_not_read_yet(
) {
    // As for POS messages: node-b owns the new outlet and would read the edit only in an
    // hour; a receipt sent to it (an outlet agent over HTTP takes a 422 as final) makes it
    // read the edits and take the outlet, and is applied.
    let (settings_a, mut settings_b, new) = two_nodes_and_an_outlet_for_b("rewa");
    settings_b.catalogue.refresh_ms = 3_600_000;
    let a = spawn_app_with(settings_a).await;
    let b = spawn_app_with(settings_b).await;
    let body = json!({"name": "Rewa Sirmour Chowk", "city": "Rewa", "kind": "outlet"});
    put_outlet(&a, &new, body).await;

    let res = b.movement(ADMIN, receipt("rewa-in-1", &new, SKU, 4)).await;
    let status = res.status();
    assert_eq!(status, StatusCode::CREATED, "{}", res.text().await.unwrap());
    assert_eq!(b.stock(&new, SKU).await["on_hand"], 4);
    assert!(owns(&b, &new).await);
    b.stop().await;
    a.finish().await;
}

#[actix_web::test]
async fn a_retired_sku_refuses_a_hold_with_a_clear_error_and_stays_retired_after_a_restart() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let body = json!({"name": "Kaju Katli 1 kg", "category": "sweets", "status": "retired"});
    let retired = put_sku(&app, SKU, body.clone()).await;
    assert_eq!(
        (retired["version"].clone(), retired["status"].clone()),
        (json!(1), json!("retired"))
    );
    // The same edit again keeps its version.
    assert_eq!(put_sku(&app, SKU, body).await["version"], 1);

    let idem = uuid::Uuid::new_v4().to_string();
    let res = app
        .reserve(
            &idem,
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["field"], "lines[0].sku");
    assert!(
        err["message"].as_str().unwrap().contains("is retired"),
        "{err}"
    );
    let receipt = json!({"event_id": "katli-in-1", "outlet": OUTLET, "sku": SKU,
        "kind": "receipt", "qty": 5, "at": recent_at()});
    let res = app.movement(ADMIN, receipt).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // What is left still sells at the counter.
    let sale = json!({"event_id": "katli-sale-1", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 2, "at": recent_at()});
    assert_eq!(
        app.movement(ADMIN, sale).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 8);

    let settings = app.stop().await;
    let app = spawn_app_with(settings).await;
    let info: Value = app
        .get(&format!("/v1/skus/{SKU}"), VIEWER)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["status"], "retired");
    assert_eq!(info["history"].as_array().unwrap().len(), 1);
    let res = app
        .reserve(
            &idem,
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Back on sale: the next version, and holds are taken again.
    let back = put_sku(
        &app,
        SKU,
        json!({"name": "Kaju Katli 1 kg", "category": "sweets"}),
    )
    .await;
    assert_eq!(back["version"], 2);
    app.hold(OUTLET, SKU, 1, 300).await;
    // Edits are checked as the CSV's rows are, and only an admin makes them.
    let bad = app
        .put(
            &format!("/v1/skus/{SKU}"),
            ADMIN,
            json!({"name": "", "category": "sweets"}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let manager = app
        .put(
            &format!("/v1/skus/{SKU}"),
            MANAGER_INDORE,
            json!({"name": "X", "category": "sweets"}),
        )
        .await;
    assert_eq!(manager.status(), StatusCode::FORBIDDEN);
    app.finish().await;
}

#[actix_web::test]
async fn out_of_stock_offers_similar_items_the_outlet_has() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, "kaju-roll-1kg", 5).await;
    app.set_stock(OUTLET, "motichoor-laddu-1kg", 3).await;
    app.set_stock(OUTLET, "besan-laddu-1kg", 1).await; // not enough for the line
    app.set_stock(OUTLET, "kaju-katli-250g", 9).await; // another size
    app.set_stock(OUTLET, "soan-papdi-1kg", 8).await;
    put_sku(
        &app,
        "soan-papdi-1kg",
        json!({"name": "Soan Papdi 1 kg", "category": "sweets", "status": "retired"}),
    )
    .await;

    let res = app
        .reserve(
            "similar-1",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 2}]}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "out_of_stock");
    assert_eq!(
        body["similar"],
        json!([
            {"for_sku": SKU, "sku": "kaju-roll-1kg", "name": "Kaju Roll 1 kg", "available": 5},
            {"for_sku": SKU, "sku": "motichoor-laddu-1kg", "name": "Motichoor Laddu 1 kg", "available": 3},
        ])
    );
    app.finish().await;
}

/// A catalogue of the demo's outlets and `n` SKUs, in a directory of its own.
fn big_catalogue(settings: &mut shelfsync::Settings, n: usize) -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    let mut skus = String::from("sku,name,category\n");
    for i in 0..n {
        skus.push_str(&format!("item-{i:05},Item {i} 500 g,sweets\n"));
    }
    std::fs::write(dir.path.join("skus.csv"), skus).unwrap();
    settings.catalogue.skus_file = dir.path.join("skus.csv");
    dir
}

mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("shelfsync-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[actix_web::test]
async fn a_bulk_count_of_6400_lines_applies_once_even_when_sent_twice() {
    let mut settings = test_settings();
    let _dir = big_catalogue(&mut settings, 6400);
    // 6,400 ledger documents to write before the answer: room for a slow MongoDB.
    settings.ledger.durable_wait_secs = 120;
    let app = spawn_app_with(settings).await;
    let at = recent_at();
    let lines: Vec<Value> = (0..6400)
        .map(|i| {
            json!({"event_id": format!("count-day1-{i}"), "outlet": OUTLET,
                "sku": format!("item-{i:05}"), "kind": "count", "qty": i % 50, "at": at})
        })
        .collect();
    let mut csv = String::from("event_id,outlet,sku,kind,qty,at\n");
    for l in &lines {
        csv.push_str(&format!(
            "{},{},{},count,{},{}\n",
            l["event_id"].as_str().unwrap(),
            OUTLET,
            l["sku"].as_str().unwrap(),
            l["qty"],
            at
        ));
    }

    let (status, first) = bulk(&app, MANAGER_INDORE, "text/csv", csv).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["applied"].clone(), first["replayed"].clone()),
        (json!(6400), json!(0))
    );
    // The same lines again, as JSON this time: each is a replay with its first answer.
    let (status, second) = bulk(
        &app,
        MANAGER_INDORE,
        "application/json",
        json!({"lines": lines}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (second["applied"].clone(), second["replayed"].clone()),
        (json!(0), json!(6400))
    );
    assert_eq!(
        first["results"][1234]["seq"],
        second["results"][1234]["seq"]
    );
    assert_eq!(second["results"][1234]["line"], 1235);

    let ledger = ledger_pages(&app, OUTLET).await;
    assert_eq!(ledger.len(), 6400, "one ledger document per line");
    assert_eq!(app.stock(OUTLET, "item-00049").await["on_hand"], 49);
    assert_eq!(app.stock(OUTLET, "item-06399").await["on_hand"], 49);
    app.finish().await;
}

#[actix_web::test]
async fn a_malformed_csv_row_is_refused_with_its_line_number_and_nothing_applied() {
    let app = spawn_app().await;
    let at = recent_at();
    let csv = format!(
        "event_id,outlet,sku,kind,qty,at,note\n\
         bad-1,{OUTLET},{SKU},count,10,{at},\n\
         bad-2,{OUTLET},{SKU2},count,4,{at},shelf 2\n\
         bad-3,{OUTLET},{SKU3},count,many,{at},\n\
         bad-4,{OUTLET},{SKU},receipt,3,{at},\n\
         bad-5,{OUTLET},no-such-sku,count,1,{at},\n\
         bad-6,{OUTLET},{SKU},count,1\n"
    );

    let (status, body) = bulk(&app, ADMIN, "text/csv", csv).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let errors: Vec<(u64, String)> = (body["errors"].as_array().unwrap().iter())
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (4, "qty".to_owned()),
            (6, "sku".to_owned()),
            (7, "line".to_owned())
        ]
    );
    assert_eq!(body["field"], "line 4: qty");
    assert!(
        ledger_pages(&app, OUTLET).await.is_empty(),
        "nothing applied"
    );
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 0);
    // Line numbers are the file's with Windows line ends too.
    let crlf = format!(
        "event_id,outlet,sku,kind,qty,at\r\ncrlf-1,{OUTLET},{SKU},count,1,{at}\r\ncrlf-2,{OUTLET},{SKU},count,x,{at}\r\n"
    );
    let (status, body) = bulk(&app, ADMIN, "text/csv", crlf).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "line 3: qty");
    // A transfer into an outlet that has lines of its own in the upload would apply after
    // them: refused, so that nothing applies in another order than sent.
    let mixed = format!(
        "event_id,outlet,sku,kind,qty,at,to_outlet\n\
         mix-1,{OTHER_OUTLET},{SKU},transfer,1,{at},{OUTLET}\n\
         mix-2,{OUTLET},{SKU},count,5,{at},\n"
    );
    let (status, body) = bulk(&app, ADMIN, "text/csv", mixed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "line 2: to_outlet");
    // More lines than the bound: refused before they are all read.
    let many = json!({"lines": vec![json!({}); 20_001]}).to_string();
    let (status, body) = bulk(&app, ADMIN, "application/json", many).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "lines", "{body}");
    // A header that misses a column refuses the upload at line 1.
    let (status, body) = bulk(
        &app,
        ADMIN,
        "text/csv",
        "event_id,outlet,sku,kind,qty\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "line 1");
    // A line the key may not record refuses the upload whole.
    let csv = format!(
        "event_id,outlet,sku,kind,qty,at\nm-1,{OUTLET},{SKU},count,1,{at}\nm-2,{OTHER_OUTLET},{SKU},receipt,1,{at}\n"
    );
    let (status, _) = bulk(&app, POS_VIJAY_NAGAR, "text/csv", csv).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        ledger_pages(&app, OUTLET).await.is_empty(),
        "nothing applied"
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_kitchen_dispatch_to_many_outlets_is_one_bulk_of_transfers() {
    let app = spawn_app().await;
    app.set_stock(KITCHEN, SKU, 100).await;
    let outlets = ["indore-vijay-nagar", "indore-palasia", "indore-rajwada"];
    let at = recent_at();
    let mut lines: Vec<Value> = outlets
        .iter()
        .map(|o| {
            json!({"event_id": format!("dispatch-1-{o}"), "outlet": KITCHEN, "sku": SKU,
                "kind": "transfer", "qty": 20, "to_outlet": o, "at": at})
        })
        .collect();
    // More than the kitchen has left: that line alone is refused.
    lines.push(
        json!({"event_id": "dispatch-1-too-many", "outlet": KITCHEN, "sku": SKU,
        "kind": "transfer", "qty": 41, "to_outlet": "indore-bhawarkuan", "at": at}),
    );

    let (status, body) = bulk(
        &app,
        ADMIN,
        "application/json",
        json!({"lines": lines}).to_string(),
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["applied"].clone(), body["refused"].clone()),
        (json!(3), json!(1))
    );
    let results = body["results"].as_array().unwrap();
    for (r, o) in results.iter().zip(outlets) {
        assert_eq!(r["status"], "applied");
        assert_eq!(r["to"]["outlet"], o);
        assert_eq!(r["to"]["on_hand"], 20);
        assert_eq!(app.stock(o, SKU).await["on_hand"], 20);
    }
    assert_eq!(results[3]["status"], "refused");
    assert!(results[3].get("to").is_none());
    assert_eq!(app.stock(KITCHEN, SKU).await["on_hand"], 40);
    assert_eq!(app.stock("indore-bhawarkuan", SKU).await["on_hand"], 0);
    app.finish().await;
}

#[actix_web::test]
async fn an_export_of_a_range_equals_the_ledger_pages_for_it() {
    let app = spawn_app().await;
    let skus = catalogue_skus(12);
    let mut marks = Vec::new();
    for round in 0..3 {
        for (i, sku) in skus.iter().enumerate() {
            app.set_stock(OUTLET, sku, (round * 10 + i + 1) as i64)
                .await;
        }
        app.hold(OUTLET, &skus[0], 1, 300).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        marks.push(chrono::Utc::now());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (from, to) = (marks[0], marks[1]);
    let ledger = ledger_pages(&app, OUTLET).await;
    let in_range: Vec<Value> = (ledger.iter())
        .filter(|d| {
            let at = d["at_ms"].as_i64().unwrap();
            at >= from.timestamp_millis() && at < to.timestamp_millis()
        })
        .cloned()
        .collect();
    assert_eq!(in_range.len(), 13, "the second round: 12 counts and a hold");

    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let query = format!(
        "/v1/export/ledger?outlet={OUTLET}&from={}&to={}&format=ndjson",
        iso(from),
        iso(to)
    );
    let res = app.get(&query, VIEWER).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, in_range);

    // The whole ledger as CSV: one row per line of each document.
    let res = app
        .get(&format!("/v1/export/ledger?outlet={OUTLET}"), VIEWER)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[..5], ["outlet", "seq", "at", "kind", "sku"]);
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    let lines: usize = ledger
        .iter()
        .map(|d| d["lines"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows.len(), lines);
    let seqs: BTreeSet<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert_eq!(seqs.len(), ledger.len());

    // Stock, with names.
    let stock = app.get("/v1/export/stock?format=ndjson", VIEWER).await;
    let stock: Vec<Value> = (stock.text().await.unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = stock.iter().find(|r| r["sku"] == skus[1].as_str()).unwrap();
    assert_eq!(row["on_hand"], 22);
    assert!(row["name"].as_str().unwrap().len() > 1);
    let bad = app.get("/v1/export/ledger?outlet=nowhere", VIEWER).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.finish().await;
}

#[actix_web::test]
async fn drift_and_reservations_export_by_status() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 40).await;
    app.set_stock(OUTLET, SKU2, 40).await;
    let held = app.hold(OUTLET, SKU, 2, 300).await;
    let cancelled = app.hold(OUTLET, SKU2, 3, 300).await;
    let cancel = app
        .post(
            &format!(
                "/v1/reservations/{}/cancel",
                cancelled["id"].as_str().unwrap()
            ),
            STOREFRONT,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let two_lines =
        json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}, {"sku": SKU2, "qty": 1}]});
    assert_eq!(
        app.reserve("two-lines", two_lines).await.status(),
        StatusCode::CREATED
    );

    let res = app
        .get(
            &format!("/v1/export/reservations?outlet={OUTLET}&status=held&format=ndjson"),
            VIEWER,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let exported: BTreeSet<String> = (text.lines())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|r| assert_eq!(r["status"], "held"))
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported.len(), 2);
    assert!(exported.contains(held["id"].as_str().unwrap()));
    let res = app
        .get(
            &format!("/v1/export/reservations?outlet={OUTLET}&status=cancelled"),
            VIEWER,
        )
        .await;
    let text = res.text().await.unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "outlet,id,status,sku,qty,channel,created_at,expires_at,ended_at,payment_ref,customer_ref"
    );
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[1].contains(cancelled["id"].as_str().unwrap()) && rows[1].contains(",cancelled,"));
    // Every status: one CSV row per line (1 + 1 + 2).
    let all = app
        .get(&format!("/v1/export/reservations?outlet={OUTLET}"), VIEWER)
        .await;
    assert_eq!(all.text().await.unwrap().lines().count(), 1 + 4);
    let bad = app
        .get(
            &format!("/v1/export/reservations?outlet={OUTLET}&status=lost"),
            VIEWER,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    tamper(&app.settings, OUTLET, SKU2, 5).await;
    assert_eq!(app.reconcile().await.drifted_skus(), 1);
    let res = app
        .get(&format!("/v1/export/drift?outlet={OUTLET}"), VIEWER)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[1][0], OUTLET);
    assert_eq!((rows[1][3], rows[1][4]), ("true", SKU2));
    assert_eq!((rows[1][5], rows[1][7]), ("45", "40"));
    // Only the range asked for.
    let later = app
        .get(
            "/v1/export/drift?from=2099-01-01T00:00:00Z&to=2099-01-02T00:00:00Z&format=ndjson",
            VIEWER,
        )
        .await;
    assert_eq!(later.text().await.unwrap(), "");
    app.finish().await;
}

#[actix_web::test]
async fn the_command_line_imports_a_count_sheet_once_and_exports_the_ledger() {
    let app = spawn_app().await;
    let dir = tempdir::Dir::new();
    let sheet = dir.path.join("counts.csv");
    let skus = catalogue_skus(30);
    let mut text = String::from("outlet,sku,qty\n");
    for (i, sku) in skus.iter().enumerate() {
        text.push_str(&format!("{OUTLET},{sku},{i}\n"));
    }
    std::fs::write(&sheet, text).unwrap();
    let run = |args: Vec<String>| {
        let settings = app.settings.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&settings, &args)
        })
    };
    let import = || {
        vec![
            "import".to_owned(),
            "--counts".to_owned(),
            sheet.display().to_string(),
            "--at".to_owned(),
            recent_at(),
            "--url".to_owned(),
            app.url.clone(),
            "--key".to_owned(),
            MANAGER_INDORE.to_owned(),
        ]
    };

    let first = run(import()).await.unwrap();
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        out.contains("30 lines: 30 applied, 0 already there"),
        "{out}"
    );
    let second = run(import()).await.unwrap();
    let out = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(
        out.contains("30 lines: 0 applied, 30 already there"),
        "{out}"
    );
    assert_eq!(ledger_pages(&app, OUTLET).await.len(), 30);
    assert_eq!(app.stock(OUTLET, &skus[29]).await["on_hand"], 29);

    // A bad row refuses the file before anything is sent.
    std::fs::write(
        &sheet,
        format!("outlet,sku,qty\n{OUTLET},{},5\n{OUTLET},nope,1\n", skus[0]),
    )
    .unwrap();
    let bad = run(import()).await.unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(err.contains("line 3: sku"), "{err}");
    assert_eq!(app.stock(OUTLET, &skus[0]).await["on_hand"], 0);

    let out = dir.path.join("ledger.ndjson");
    let export = run(vec![
        "export".into(),
        "ledger".into(),
        "--outlet".into(),
        OUTLET.into(),
        "--format".into(),
        "ndjson".into(),
        "--out".into(),
        out.display().to_string(),
        "--url".into(),
        app.url.clone(),
        "--key".into(),
        VIEWER.into(),
    ])
    .await
    .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let exported: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, ledger_pages(&app, OUTLET).await);
    app.finish().await;
}
