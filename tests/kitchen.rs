//! The kitchen plan (README, Kitchen plan): expected sales less free units that sell before
//! they expire, less holds, plus safety stock; beside the head cook's numbers.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn plan(app: &TestApp, query: &str) -> Value {
    let res = app.get(&format!("/v1/kitchen/plan?{query}"), VIEWER).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn row<'a>(plan: &'a Value, sku: &str) -> &'a Value {
    (plan["rows"].as_array().unwrap().iter())
        .find(|r| r["sku"] == sku)
        .unwrap_or_else(|| panic!("no row of {sku}: {plan}"))
}

#[actix_web::test]
async fn the_plan_sends_expected_sales_less_sellable_stock_and_holds_plus_safety() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut settings = test_settings();
        settings.kitchen.safety_share = 0.2;
        settings.kitchen.safety_min = 1;
        let app = spawn_app_with(settings).await;
        app.six_an_hour(OUTLET, SKU, 10).await;
        // A 15-minute hold of 2 (loose units: there is no lot yet), then 5 units of a tray
        // that expires in 10 minutes.
        app.hold(OUTLET, SKU, 2, 900).await;
        app.moved(
            json!({"event_id": "tray-in", "outlet": OUTLET, "sku": SKU, "kind": "receipt",
            "qty": 5, "lot": "tray-1", "expires_at": from_now(chrono::Duration::minutes(10)),
            "at": recent_at()}),
        )
        .await;

        // Over 2 hours at 6 an hour: 12 expected. Of the free units, 1 of the tray sells before
        // it expires (4 are lost) and the 8 loose ones all sell: 9. Safety: 20 % of 12, 3.
        // 12 - 9 - 2 + 3 = 4. (The plan is read a few seconds after the tray came, so a
        // little less of it sells in time: up to 0.1 less, and the suggestion may round up.)
        let query = format!("outlet={OUTLET}&window_hours=2");
        let ready = eventually(20, || async {
            let p = plan(&app, &query).await;
            (p["rows"].as_array().unwrap().iter()).any(|r| r["sku"] == SKU && r["expected"] == 12.0)
        })
        .await;
        assert!(
            ready,
            "the plan never read the sales: {}",
            plan(&app, &query).await
        );
        let p = plan(&app, &query).await;
        let r = row(&p, SKU);
        let num = |f: &str| r[f].as_f64().unwrap();
        assert_eq!(
            [&r["expected"], &r["held"], &r["safety"]],
            [&json!(12.0), &json!(2), &json!(3)],
            "{r}"
        );
        assert!((8.85..=9.0).contains(&num("sellable")), "{r}");
        assert!((4.0..=4.15).contains(&num("will_expire")), "{r}");
        assert!([4, 5].contains(&r["suggested"].as_i64().unwrap()), "{r}");
        assert_eq!(r["on_hand"], 15);
        assert!(r.get("cook").is_none());
        // A longer window needs more: 24 hours expect 144.
        let day = plan(&app, &format!("outlet={OUTLET}&window_hours=24")).await;
        assert_eq!(row(&day, SKU)["expected"], 144.0);
        // With no outlet, every shop the key may read (not the kitchen).
        let all = plan(&app, "window_hours=2").await;
        assert!((all["rows"].as_array().unwrap().iter())
            .all(|r| r["outlet"] != "central-kitchen-indore"));
        assert_eq!(row(&all, SKU)["expected"], 12.0);

        // The head cook's number sits beside it.
        let path = format!("/v1/kitchen/plan/{OUTLET}/{SKU}");
        let res = app.put(&path, MANAGER_INDORE, json!({"qty": 5})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let p = plan(&app, &query).await;
        assert_eq!(row(&p, SKU)["cook"]["qty"], 5);
        assert_eq!(row(&p, SKU)["cook"]["by"], "demo Indore manager");
        assert_eq!(p["suggested_total"], row(&p, SKU)["suggested"]);
        assert_eq!(p["cook_total"], 5);
        // The same again is the same number.
        let res = app.put(&path, MANAGER_INDORE, json!({"qty": 5})).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(row(&plan(&app, &query).await, SKU)["cook"]["qty"], 5);

        // Refused, and nothing changed.
        for (key, path, body, status, field) in [
            (VIEWER, path.clone(), json!({"qty": 9}), 403, None),
            (
                MANAGER_INDORE,
                format!("/v1/kitchen/plan/bhopal-mp-nagar/{SKU}"),
                json!({"qty": 9}),
                403,
                None,
            ),
            (
                MANAGER_INDORE,
                path.clone(),
                json!({"qty": -1}),
                422,
                Some("qty"),
            ),
            (
                MANAGER_INDORE,
                path.clone(),
                json!({"qty": 1_000_001}),
                422,
                Some("qty"),
            ),
            (MANAGER_INDORE, path.clone(), json!({"units": 9}), 422, None),
            (MANAGER_INDORE, path.clone(), json!({}), 422, Some("qty")),
            (
                MANAGER_INDORE,
                format!("/v1/kitchen/plan/{OUTLET}/no-such-sku"),
                json!({"qty": 9}),
                422,
                Some("sku"),
            ),
            (
                MANAGER_INDORE,
                format!("/v1/kitchen/plan/nowhere/{SKU}"),
                json!({"qty": 9}),
                422,
                Some("outlet"),
            ),
        ] {
            let res = app.put(&path, key, body.clone()).await;
            assert_eq!(res.status().as_u16(), status, "{path} {body}");
            let answer: Value = res.json().await.unwrap();
            if let Some(field) = field {
                assert_eq!(answer["field"], field, "{answer}");
            }
        }
        for (query, field) in [
            (format!("outlet={OUTLET}&window_hours=0"), "window_hours"),
            (format!("outlet={OUTLET}&window_hours=169"), "window_hours"),
            ("outlet=nowhere".to_string(), "outlet"),
        ] {
            let res = app.get(&format!("/v1/kitchen/plan?{query}"), VIEWER).await;
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
            let answer: Value = res.json().await.unwrap();
            assert_eq!(answer["field"], field);
        }
        assert_eq!(
            app.get(&format!("/v1/kitchen/plan?outlet={OUTLET}"), PUBLIC)
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(row(&plan(&app, &query).await, SKU)["cook"]["qty"], 5);

        // Cleared.
        let res = app.put(&path, MANAGER_INDORE, json!({"qty": null})).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(row(&plan(&app, &query).await, SKU).get("cook").is_none());
        app.finish().await;
    })
    .await
    .expect("the test took over 180 s");
}
