//! Runbook drills: each drill makes a runbook's failure happen to a test instance (a real
//! service on the test's own Redis prefix and MongoDB database), then runs the runbook's own
//! commands, section by section, through bash, exactly as written in deploy/runbooks/, and
//! checks that they say what the runbook says they will.
//!
//! In a runbook, a ```` ```sh setup ```` block exports the variables the commands read (the
//! drill sets them to the test instance instead: the same names, and the commands get those
//! and `PATH` only), and a ```` ```sh production ```` block is for a production host
//! (systemd, mongosh, mongodump): the drill does its part itself (stopping and starting the
//! service). Every other ```` ```sh ```` block runs under `bash -e -o pipefail`: every
//! command in it must succeed, not only the last.
//!
//! The service's own overrides (its Redis, database, catalogue) reach `shelfsync` the way
//! they do on a production host: from the environment file `SHELFSYNC_ENV_FILE` names,
//! which the drill writes in systemd's `EnvironmentFile=` format.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use shelfsync::Settings;

/// The keys the rotation drill moves the web shop from and to.
const OLD_KEY: &str = "drill-old-storefront-key-0123456789";
const NEW_KEY: &str = "drill-new-storefront-key-9876543210";
/// The shop whose till sends only a rejected sale in the POS drill.
const REJECTED_SHOP: &str = "indore-palasia";

/// One fenced `sh` block of a runbook: its kind (`setup`, `production` or empty) and text.
struct Block {
    kind: String,
    text: String,
}

/// A runbook's `sh` blocks by section (`## Check`, `## Fix`, …; the title's are under "").
struct Runbook {
    name: &'static str,
    sections: Vec<(String, Vec<Block>)>,
}

impl Runbook {
    fn read(name: &'static str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/runbooks/{name}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut sections: Vec<(String, Vec<Block>)> = vec![(String::new(), Vec::new())];
        let mut open: Option<(String, String)> = None;
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some((kind, body)) = &mut open {
                if trimmed == "```" {
                    let block = Block {
                        kind: std::mem::take(kind),
                        text: std::mem::take(body),
                    };
                    sections.last_mut().unwrap().1.push(block);
                    open = None;
                } else {
                    body.push_str(trimmed);
                    body.push('\n');
                }
            } else if let Some(title) = line.strip_prefix("## ") {
                sections.push((title.to_owned(), Vec::new()));
            } else if let Some(info) = trimmed.strip_prefix("```sh") {
                open = Some((info.trim().to_owned(), String::new()));
            }
        }
        assert!(open.is_none(), "{name}: a block is not closed");
        Self { name, sections }
    }

    /// The variables the runbook's setup block exports.
    fn variables(&self) -> Vec<String> {
        let setup = (self.sections.iter().flat_map(|(_, b)| b))
            .find(|b| b.kind == "setup")
            .unwrap_or_else(|| panic!("{}: no setup block", self.name));
        (setup.text.lines())
            .filter_map(|l| l.strip_prefix("export "))
            .map(|l| l.split('=').next().unwrap().to_owned())
            .collect()
    }
}

/// A drill: the test instance and the environment the runbook's commands run in.
struct Drill {
    runbook: Runbook,
    /// Every variable a runbook may export, as the drill sets it; the commands get those
    /// their runbook exports.
    env: Vec<(String, String)>,
    /// The service's environment file (`SHELFSYNC_ENV_FILE`), as (name, value) lines.
    env_file: Vec<(String, String)>,
    dir: PathBuf,
    /// The command blocks run (by their place in the runbook), for the check that none was
    /// left out.
    ran: std::collections::BTreeSet<usize>,
}

impl Drill {
    fn new(name: &'static str, app: &TestApp) -> Self {
        let s = &app.settings;
        let root = env!("CARGO_MANIFEST_DIR");
        let bin = Path::new(env!("CARGO_BIN_EXE_shelfsync")).parent().unwrap();
        let dir = std::env::temp_dir().join(format!("shelfsync-drill-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            ),
            ("SHELFSYNC_URL".into(), app.url.clone()),
            ("SHELFSYNC_API_KEY".into(), ADMIN.into()),
            ("REDIS_URL".into(), s.redis.url.expose().to_owned()),
            ("PREFIX".into(), s.redis.key_prefix.clone()),
            ("OUTLET".into(), OUTLET.into()),
            ("KITCHEN".into(), "central-kitchen-indore".into()),
            ("OLD_KEY".into(), OLD_KEY.into()),
            ("NEW_KEY".into(), NEW_KEY.into()),
            ("MQTT_HOST".into(), "127.0.0.1".into()),
            ("MQTT_PORT".into(), s.mqtt.port.to_string()),
            ("MQTT_USER".into(), "ops".into()),
            ("MQTT_PASSWORD".into(), "ops-pw".into()),
            ("MONGO_URI".into(), s.mongo.uri.expose().to_owned()),
            ("SHELFSYNC_CONFIG".into(), format!("{root}/config.toml")),
            (
                "SHELFSYNC_ENV_FILE".into(),
                dir.join("shelfsync.env").display().to_string(),
            ),
            ("MONGO_DB".into(), s.mongo.database.clone()),
            // Read by production blocks only (mongorestore's backup, the shop's agent).
            (
                "BACKUP_DIR".into(),
                dir.join("backup").display().to_string(),
            ),
            (
                "SHELFSYNC_AGENT_CONFIG".into(),
                format!("{root}/agent/agent.toml"),
            ),
        ];
        // What `shelfsync` reads beside its settings file: the service's overrides, from its
        // environment file.
        let env_file = (cli_env(s).into_iter())
            .filter(|(k, _)| k.starts_with("SHELFSYNC__"))
            .collect();
        let runbook = Runbook::read(name);
        for variable in runbook.variables() {
            assert!(
                env.iter().any(|(k, _)| *k == variable),
                "{name} exports {variable}, which the drill does not set"
            );
        }
        let drill = Self {
            runbook,
            env,
            env_file,
            dir,
            ran: Default::default(),
        };
        drill.write_env_file();
        drill
    }

    /// Writes the service's environment file (`KEY=value` lines, as systemd reads them).
    fn write_env_file(&self) {
        let text: String = (self.env_file.iter())
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let file = self.dir.join("shelfsync.env");
        std::fs::write(file, format!("# the drill's service environment\n{text}")).unwrap();
    }

    /// Sets (or replaces) a variable of the service's environment file, as the operator
    /// edits it.
    fn set_in_env_file(&mut self, name: &str, value: String) {
        self.env_file.retain(|(k, _)| k != name);
        self.env_file.push((name.to_owned(), value));
        self.write_env_file();
    }

    /// The service moved (a restart on a new port).
    fn serve_at(&mut self, app: &TestApp) {
        self.set("SHELFSYNC_URL", app.url.clone());
    }

    /// The command blocks of `section`, in order.
    fn blocks(&self, section: &str) -> Vec<(usize, &Block)> {
        let blocks: Vec<(usize, &Block)> = (self.runbook.sections.iter())
            .filter(|(title, _)| title.starts_with(section))
            .flat_map(|(_, blocks)| blocks)
            .filter(|b| b.kind.is_empty())
            .map(|b| (self.index_of(b), b))
            .collect();
        assert!(
            !blocks.is_empty(),
            "{}: no commands under {section}",
            self.runbook.name
        );
        blocks
    }

    /// A block's place among all the runbook's command blocks.
    fn index_of(&self, block: &Block) -> usize {
        (self.runbook.sections.iter())
            .flat_map(|(_, blocks)| blocks)
            .filter(|b| b.kind.is_empty())
            .position(|b| std::ptr::eq(b, block))
            .unwrap()
    }

    /// Runs every command block of `section` in order; their output, each block's after a
    /// `$ ` line with its first command.
    async fn run(&mut self, section: &str) -> String {
        let count = self.blocks(section).len();
        let mut said = String::new();
        for i in 0..count {
            said.push_str(&self.run_one(section, i).await);
        }
        said
    }

    /// Runs the `i`th command block of `section`, which must exit 0; its output.
    async fn run_one(&mut self, section: &str, i: usize) -> String {
        let (index, text) = {
            let blocks = self.blocks(section);
            let (index, block) = blocks[i];
            (index, block.text.clone())
        };
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            tokio::process::Command::new("bash")
                .args(["-e", "-o", "pipefail", "-c"])
                .arg(&text)
                .env_clear()
                .envs(self.exported().map(|(k, v)| (k, v)))
                .current_dir(&self.dir)
                .output(),
        )
        .await
        .expect("a runbook block within 2 minutes")
        .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{} / {section}: failed ({}):\n{text}\n---\n{said}",
            self.runbook.name,
            out.status,
        );
        self.ran.insert(index);
        format!("$ {}\n{said}", text.lines().next().unwrap())
    }

    /// `PATH` and the variables the runbook's setup block exports: all its commands get.
    fn exported(&self) -> impl Iterator<Item = &(String, String)> {
        let names = self.runbook.variables();
        (self.env.iter()).filter(move |(k, _)| k == "PATH" || names.contains(k))
    }

    /// Sets (or replaces) a variable of the commands' environment.
    fn set(&mut self, name: &str, value: String) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value));
    }

    /// Every command block of the runbook was run.
    fn done(self) {
        let all = (self.runbook.sections.iter())
            .flat_map(|(_, blocks)| blocks)
            .filter(|b| b.kind.is_empty())
            .count();
        assert_eq!(
            self.ran.len(),
            all,
            "{}: blocks left out",
            self.runbook.name
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the ledger holds everything committed (so that a drill's loss is Redis's
/// alone).
async fn ledger_caught_up(app: &TestApp) {
    assert!(
        eventually(30, || async {
            let lag: serde_json::Value =
                app.get("/v1/ledger/lag", ADMIN).await.json().await.unwrap();
            (lag["outlets"].as_array().unwrap().iter()).all(|o| o["entries"] == 0)
        })
        .await,
        "the ledger caught up"
    );
}

/// Redis lost every key of the prefix under a running service: the runbook's checks see
/// it, its offline rebuild (service stopped) brings every outlet back from the ledger, and
/// `shelfsync check` is clean.
#[actix_web::test]
async fn redis_lost() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.hold(OUTLET, SKU, 2, 600).await;
    app.set_stock(OTHER_OUTLET, SKU2, 5).await;
    ledger_caught_up(&app).await;
    let mut drill = Drill::new("redis-lost.md", &app);

    // Redis restarted empty.
    wipe_redis(&app.settings).await;
    let checked = drill.run("Check").await;
    assert!(checked.contains("\"status\":\"ready\""), "{checked}");
    // Fewer outlets' seq keys than outlets (`--scan … | wc -l`), the runbook's sign of a
    // Redis that restarted empty (the service starts rebuilding them by itself at once).
    let counted: Vec<i64> = (checked.lines())
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(matches!(counted[..], [n] if n < 13), "{checked}");

    // Fix, step 3: every process stopped (the production block), then the rebuild.
    let settings: Settings = app.stop().await;
    let fixed = drill.run("Fix").await;
    assert!(fixed.contains("rebuilt 13 outlets"), "{fixed}");
    assert!(!fixed.contains("Redis ahead"), "{fixed}");
    assert!(fixed.contains("exit 0"), "{fixed}");

    let app = spawn_app_with(settings).await;
    drill.serve_at(&app);
    // Started again, and ready once its MQTT session is up.
    assert!(mqtt_ready(&app).await);
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 10);
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 2);
    let seen = drill.run("What you should see").await;
    assert!(seen.contains("shelfsync_ready 1"), "{seen}");
    assert!(
        seen.contains("shelfsync_dependency_up{dependency=\"redis\"} 1"),
        "{seen}"
    );
    let after = drill.run("Afterwards").await;
    assert!(after.contains("maxmemory-policy"), "{after}");
    drill.done();
    app.finish().await;
}

/// The reconciler found and healed drift: the runbook's checks show it in the metrics, the
/// drift export and a clean `shelfsync check`; its rebuild of the one outlet (service
/// stopped) leaves it clean.
#[actix_web::test]
async fn drift_found() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 40).await;
    tamper(&app.settings, OUTLET, SKU, 7).await;
    let report = app.reconcile().await;
    assert_eq!(report.drifted_skus(), 1);
    let mut drill = Drill::new("drift-found.md", &app);

    let checked = drill.run("Check").await;
    let total = format!("shelfsync_reconciler_drift_skus_total{{outlet=\"{OUTLET}\"}} 1");
    assert!(checked.contains(&total), "{checked}");
    let healed = format!("shelfsync_reconciler_healed_skus_total{{outlet=\"{OUTLET}\"}} 1");
    assert!(checked.contains(&healed), "{checked}");
    // The export's row: outlet, seq, at, healed, sku, Redis's numbers, the ledger's.
    let row = (checked.lines())
        .find(|l| l.starts_with(&format!("{OUTLET},")) && l.contains(SKU))
        .unwrap_or_else(|| panic!("no drift row: {checked}"));
    assert!(
        row.contains(",true,") && row.contains(",47,") && row.contains(",40,"),
        "{row}"
    );
    assert!(checked.contains("exit 0"), "healed, so clean: {checked}");
    assert!(checked.contains(&app.settings.cluster.node_id), "{checked}");

    let settings = app.stop().await;
    let fixed = drill.run("Fix").await;
    assert!(
        fixed.contains("rebuilt 1 outlets") || fixed.contains("rebuilt 1 outlet"),
        "{fixed}"
    );
    assert!(fixed.contains("exit 0"), "{fixed}");
    drill.done();
    cleanup(&settings).await;
}

/// A counter sale left a hold short that cannot move (it was made for the outlet, not a
/// PIN): the runbook's checks show the risk and find the hold; its transfer from the
/// kitchen covers it and the sweep clears the risk.
#[actix_web::test]
async fn oversell_risk() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 3).await;
    app.set_stock("central-kitchen-indore", SKU, 20).await;
    let hold = app.hold(OUTLET, SKU, 3, 600).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    let sale = serde_json::json!({"event_id": "drill-counter-1", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 2, "at": recent_at()});
    assert!(app.movement(ADMIN, sale).await.status().is_success());
    let risk = format!("shelfsync_oversell_risk_holds{{outlet=\"{OUTLET}\"}}");
    assert!(eventually(10, || async { metric(&app, &risk).await == 1.0 }).await);
    let mut drill = Drill::new("oversell-risk.md", &app);

    let checked = drill.run("Check").await;
    assert!(checked.contains(&format!("{risk} 1")), "{checked}");
    assert!(
        checked.contains(&format!(
            "shelfsync_oversell_risk_units{{outlet=\"{OUTLET}\"}} 2"
        )),
        "{checked}"
    );
    // 3 held, 1 on hand: the hold is 2 short. The loop over the held reservations prints
    // the one at risk.
    assert!(
        checked.lines().any(|l| l.trim() == id),
        "{id} not found: {checked}"
    );

    let fixed = drill.run("Fix").await;
    // The transfer's answer: the kitchen's side, then the shop's, now covering its holds.
    let arrived = format!("\"to\":{{\"outlet\":\"{OUTLET}\"");
    assert!(
        fixed.contains(&arrived) && fixed.contains("\"available\":0}"),
        "{fixed}"
    );
    assert!(
        eventually(15, || async { metric(&app, &risk).await == 0.0 }).await,
        "the sweep clears the risk"
    );
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 3);
    drill.done();
    app.finish().await;
}

/// The broker went away: the runbook's checks name MQTT as what is down, on the process and
/// on every process listed in Redis.
#[actix_web::test]
async fn not_ready() {
    let mut broker = TestBroker::start().await;
    let mut settings = test_settings();
    settings.mqtt.port = broker.port;
    let app = spawn_app_with(settings).await;
    assert!(mqtt_ready(&app).await);
    let mut drill = Drill::new("not-ready.md", &app);

    broker.kill();
    assert!(
        eventually(15, || async {
            app.get("/readyz", ADMIN).await.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "not ready without the broker"
    );
    let checked = drill.run("Check").await;
    assert!(
        checked.contains("\"message\":\"not ready: mqtt\""),
        "{checked}"
    );
    assert!(checked.contains("\"redis\":\"ok\""), "{checked}");
    assert!(checked.contains("shelfsync_ready 0"), "{checked}");
    assert!(
        checked.contains("shelfsync_dependency_up{dependency=\"mqtt\"} 0"),
        "{checked}"
    );
    assert!(
        checked.contains("shelfsync_dependency_up{dependency=\"mongo\"} 1"),
        "{checked}"
    );
    // The loop over every process's address: this one, answering the same.
    assert_eq!(
        checked.matches("\"message\":\"not ready: mqtt\"").count(),
        2,
        "{checked}"
    );
    assert!(checked.contains("== http://"), "{checked}");

    broker.restart().await;
    assert!(mqtt_ready(&app).await, "ready again with the broker back");
    drill.done();
    app.finish().await;
}

/// The web shop's key rotated: the runbook's settings test passes with both keys listed, the
/// new key is taken by every process after the restart, and once the old key is removed it
/// is refused everywhere.
#[actix_web::test]
async fn rotate_api_keys() {
    let key = |key: &str, label: &str| shelfsync::settings::ApiKeySettings {
        key: shelfsync::settings::Secret::new(key),
        role: shelfsync::settings::Role::Storefront,
        outlets: Vec::new(),
        label: label.into(),
    };
    let mut settings = test_settings();
    settings.api_keys.push(key(OLD_KEY, "web shop (old)"));
    let base = settings.api_keys.clone();
    let app = spawn_app_with(settings).await;
    let mut drill = Drill::new("rotate-api-keys.md", &app);
    let checked = drill.run("Check").await;
    assert!(checked.contains(&app.url), "{checked}");

    // Step 1 and 2: the new key beside the old in the shell's settings, tested.
    let listed = |keys: &[(&str, &str)]| {
        let keys: Vec<String> = (keys.iter())
            .map(|(k, l)| format!("{{key=\"{k}\",role=\"storefront\",label=\"{l}\"}}"))
            .collect();
        format!(
            "[{{key=\"{ADMIN}\",role=\"admin\",label=\"ops\"}},{}]",
            keys.join(",")
        )
    };
    let both = [(OLD_KEY, "web shop (old)"), (NEW_KEY, "web shop (new)")];
    drill.set_in_env_file("SHELFSYNC__API_KEYS", listed(&both));
    let tested = drill.run_one("Fix", 0).await;
    for label in ["label: \"web shop (old)\"", "label: \"web shop (new)\""] {
        assert!(tested.contains(label), "{label}: {tested}");
    }

    // Step 3: restarted with both; step 4: the new key works.
    let mut settings = app.stop().await;
    settings.api_keys.push(key(NEW_KEY, "web shop (new)"));
    let app = spawn_app_with(settings).await;
    drill.serve_at(&app);
    let new_works = drill.run_one("Fix", 1).await;
    assert!(
        new_works.contains(&format!("{} 200", app.url)),
        "{new_works}"
    );

    // Step 6: the old key removed, tested, restarted; step 7: refused everywhere.
    drill.set_in_env_file("SHELFSYNC__API_KEYS", listed(&both[1..]));
    let tested = drill.run_one("Fix", 0).await;
    assert!(
        tested.contains("label: \"web shop (new)\"") && !tested.contains("web shop (old)"),
        "{tested}"
    );
    let mut settings = app.stop().await;
    settings.api_keys = (base.into_iter())
        .filter(|k| k.key.expose() != OLD_KEY)
        .chain([key(NEW_KEY, "web shop (new)")])
        .collect();
    let app = spawn_app_with(settings).await;
    drill.serve_at(&app);
    let old_refused = drill.run_one("Fix", 2).await;
    assert!(
        old_refused.contains("{\"error\":\"unauthorized\",\"message\":\"a valid API key is required: Authorization: Bearer <key>\"} 401"),
        "{old_refused}"
    );
    drill.done();
    app.finish().await;
}

/// The ledger restored from a backup older than Redis: with the service stopped, the
/// runbook's deletion of the seq keys and its rebuild from the whole ledger bring Redis back
/// to the backup's numbers (Redis was ahead, so a plain rebuild would leave it alone); the
/// recount then lands. (`mongodump` and `mongorestore` are production blocks: the drill
/// restores by cutting the ledger back to the backup's point and dropping the checkpoints.)
#[actix_web::test]
async fn restore_ledger() {
    use futures_util::TryStreamExt;
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    ledger_caught_up(&app).await;
    let db = database(&app.settings).await;
    let ledger = db.collection::<mongodb::bson::Document>("ledger");
    let backup_seq = (ledger
        .find(mongodb::bson::doc! {"outlet": OUTLET})
        .await
        .unwrap())
    .try_collect::<Vec<_>>()
    .await
    .unwrap()
    .len() as i64;
    assert!(backup_seq >= 1);
    // After the backup: a sale and a delivery the restored ledger will not have.
    let sale = serde_json::json!({"event_id": "drill-after-backup", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 4, "at": recent_at()});
    assert!(app.movement(ADMIN, sale).await.status().is_success());
    app.set_stock(OUTLET, SKU2, 8).await;
    ledger_caught_up(&app).await;
    let mut drill = Drill::new("restore-ledger.md", &app);

    // Step 1: what Redis says, for the recount.
    let saved = drill.run_one("Fix", 0).await;
    assert!(saved.contains("exported "), "{saved}");
    let before = std::fs::read_to_string("/var/tmp/stock-before-restore.csv").unwrap();
    assert!(before.contains(SKU) && before.contains(SKU2), "{before}");

    // Steps 2 and 3: every process stopped, the backup restored.
    let settings = app.stop().await;
    let cut = ledger
        .delete_many(mongodb::bson::doc! {"outlet": OUTLET, "seq": {"$gt": backup_seq}})
        .await
        .unwrap();
    assert!(cut.deleted_count >= 2, "{cut:?}");
    for checkpoints in ["checkpoints", "checkpoint_parts"] {
        db.collection::<mongodb::bson::Document>(checkpoints)
            .drop()
            .await
            .unwrap();
    }
    let plain = cli(&settings, &["check"]);
    assert!(
        !plain.status.success(),
        "Redis is ahead of the restored ledger"
    );

    // Steps 4 and 5.
    let deleted = drill.run_one("Fix", 1).await;
    assert!(!deleted.contains("ERR"), "{deleted}");
    let rebuilt = drill.run_one("Fix", 2).await;
    assert!(rebuilt.contains("rebuilt 13 outlets"), "{rebuilt}");
    assert!(!rebuilt.contains("Redis ahead"), "{rebuilt}");
    assert!(rebuilt.contains("exit 0"), "{rebuilt}");

    // Step 6: started again, at the backup's numbers; step 7: the recount.
    let app = spawn_app_with(settings).await;
    drill.serve_at(&app);
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 10);
    assert_eq!(app.stock(OUTLET, SKU2).await["on_hand"], 0);
    std::fs::write(
        drill.dir.join("counts.csv"),
        format!("outlet,sku,qty\n{OUTLET},{SKU},6\n{OUTLET},{SKU2},8\n"),
    )
    .unwrap();
    drill.set("SHELFSYNC_API_KEY", MANAGER_INDORE.into());
    let counted = drill.run_one("Fix", 3).await;
    assert!(
        counted.contains("2 lines: 2 applied, 0 already there, 0 refused, 0 not applied"),
        "{counted}"
    );
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 6);
    assert_eq!(app.stock(OUTLET, SKU2).await["on_hand"], 8);
    let _ = std::fs::remove_file("/var/tmp/stock-before-restore.csv");
    drill.done();
    app.finish().await;
}

/// A till's sale was rejected (dlq/) and the till then fell silent: the runbook's checks
/// show the outlet's last POS message beside the clock and the rejected count, and its
/// fix records the sale by hand.
#[actix_web::test]
async fn pos_outlet_offline() {
    use shelfsync::mqtt::topics::Topics;
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);
    let till = MqttClient::connect(app.settings.mqtt.port).await;
    let topic = Topics::new(&app.settings.mqtt.topic_prefix).pos(OUTLET);
    let sold = serde_json::json!({"event_id": "drill-pos-1", "sku": SKU2, "kind": "sale_counter",
        "qty": 1, "at": recent_at()});
    till.publish(&topic, sold.to_string()).await;
    // Another shop's till sends only a sale that is rejected: it is heard all the same.
    let unknown = serde_json::json!({"event_id": "drill-pos-2", "sku": "no-such-sweet",
        "kind": "sale_counter", "qty": 1, "at": recent_at()});
    let rejected_at = Topics::new(&app.settings.mqtt.topic_prefix).pos(REJECTED_SHOP);
    till.publish(&rejected_at, unknown.to_string()).await;
    assert!(
        eventually(15, || async {
            metric(&app, "shelfsync_mqtt_dlq_total").await == 1.0
        })
        .await,
        "the unknown SKU rejected"
    );
    let mut drill = Drill::new("pos-outlet-offline.md", &app);

    let checked = drill.run("Check").await;
    assert!(checked.contains("shelfsync_mqtt_dlq_total 1"), "{checked}");
    assert!(checked.contains("shelfsync_mqtt_connected 1"), "{checked}");
    // The outlet's last message beside `date +%s`, a few seconds apart.
    let value = |prefix: &str| -> f64 {
        (checked.lines())
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {checked}"))
            .trim()
            .parse()
            .unwrap()
    };
    let heard = |outlet: &str| {
        value(&format!(
            "shelfsync_pos_last_message_timestamp_seconds{{outlet=\"{outlet}\"}} "
        ))
    };
    let now: f64 = (checked.lines())
        .rfind(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap()
        .parse()
        .unwrap();
    // A shop whose till sent nothing shows the process's start; the two that sent, later.
    let started = heard("ujjain-mahakal");
    for outlet in [OUTLET, REJECTED_SHOP] {
        let heard = heard(outlet);
        assert!(
            (now - heard).abs() < 60.0,
            "{outlet}: {heard} against {now}"
        );
        assert!(heard > started, "{outlet} not heard: {checked}");
    }

    let fixed = drill.run("Fix").await;
    assert!(fixed.contains("\"on_hand\":9"), "{fixed}");
    drill.done();
    app.finish().await;
}

/// One of two processes killed (kill -9, no hand-over): the runbook's checks show the
/// members and their heartbeats, the dead one's address not answering, and every outlet's
/// lease; once the leases expire the live process holds every one of them.
#[actix_web::test]
async fn owner_dead() {
    let (a, mut b) = two_nodes();
    b.cluster.lease_ms = 2000;
    let app = spawn_app_with(b).await;
    let port = free_port();
    let s = a.clone();
    let dead = procs::Proc::start("shelfsync", port, move || {
        let mut c = procs::serve_command(&s, port);
        c.env("SHELFSYNC__CLUSTER__LEASE_MS", "2000");
        c
    })
    .await;
    let owned = || async {
        let ready: serde_json::Value = app.get("/readyz", ADMIN).await.json().await.unwrap();
        ready["owns"].as_array().map_or(0, Vec::len)
    };
    assert!(
        eventually(30, || async { (1..13).contains(&owned().await) }).await,
        "the outlets spread over both"
    );
    let mut drill = Drill::new("owner-dead.md", &app);

    dead.kill();
    let dead_url = format!("== http://127.0.0.1:{port}");
    let checked = drill.run("Check").await;
    assert!(
        checked.contains("node-a") && checked.contains("node-b"),
        "{checked}"
    );
    // The readiness loop: the dead one's address answers nothing, the live one ready.
    let after_dead = checked
        .split(&dead_url)
        .nth(1)
        .expect("the dead one's address");
    assert!(
        after_dead
            .trim_start()
            .starts_with("no answer (curl exit 7)"),
        "{checked}"
    );
    assert!(checked.contains("\"status\":\"ready\""), "{checked}");

    assert!(
        eventually(30, || async { owned().await == 13 }).await,
        "the live process takes every outlet"
    );
    let again = drill.run("Check").await;
    let leases = (again.lines())
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|v| v.contains("node-b"))
        })
        .count();
    assert_eq!(leases, 13, "{again}");
    drill.done();
    app.finish().await;
}

/// A test instance on a SecantusDB of its own, stopped (SIGSTOP) until the outlet's ledger
/// lag is past its 1 s budget and a new hold was shed; (the server, the service, its dir).
async fn stalled_ledger() -> (procs::Proc, TestApp, PathBuf) {
    let dir = std::env::temp_dir().join(format!("shelfsync-drill-db-{}", uuid::Uuid::new_v4()));
    let mongo = procs::start_mongo(&dir).await;
    let mut settings = test_settings();
    settings.mongo.uri = procs::mongo_uri(&mongo);
    settings.ledger.lag_max_secs = 1;
    settings.ledger.durable_wait_secs = 3;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 100).await;
    mongo.pause();
    let cart = |id: &str| {
        let body = serde_json::json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}],
            "ttl_secs": 300});
        (id.to_owned(), body)
    };
    let (id, body) = cart("drill-stalled-1");
    assert_eq!(
        app.reserve(&id, body).await.status(),
        reqwest::StatusCode::CREATED
    );
    // Each try a new hold (a retry of one id would get its first answer again).
    let tries = std::sync::atomic::AtomicUsize::new(2);
    assert!(
        eventually(15, || async {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (id, body) = cart(&format!("drill-stalled-{n}"));
            app.reserve(&id, body).await.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "a new hold shed past the budget"
    );
    (mongo, app, dir)
}

/// The ledger's database answers again: the ledger catches up, and the drill ends.
async fn resumed(mongo: procs::Proc, app: TestApp, dir: PathBuf, drill: Drill) {
    mongo.resume();
    ledger_caught_up(&app).await;
    drill.done();
    app.finish().await;
    drop(mongo);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ledger's database stopped answering: the runbook's checks show the lag, the outbox
/// growing in Redis, and the insert figures.
#[actix_web::test]
async fn mongodb_down() {
    let (mongo, app, dir) = stalled_ledger().await;
    let mut drill = Drill::new("mongodb-down.md", &app);
    let checked = drill.run("Check").await;
    let lag: serde_json::Value = serde_json::from_str(checked.lines().nth(1).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {checked}"));
    let row = (lag["outlets"].as_array().unwrap().iter())
        .find(|o| o["outlet"] == OUTLET)
        .unwrap();
    assert_eq!(row["shedding_holds"], true, "{checked}");
    assert!(row["entries"].as_i64().unwrap() >= 1, "{checked}");
    assert!(
        checked.contains(&format!(
            "shelfsync_ledger_outbox_entries{{outlet=\"{OUTLET}\"}}"
        )),
        "{checked}"
    );
    assert!(
        checked.contains("shelfsync_ledger_insert_seconds_count"),
        "{checked}"
    );
    assert!(
        checked.contains("shelfsync_dependency_up{dependency=\"mongo\"} 0"),
        "{checked}"
    );
    // XLEN of the outlet's outbox: what waits for the ledger.
    let waiting = (checked.lines())
        .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no XLEN: {checked}"));
    assert!(waiting.parse::<i64>().unwrap() >= 1, "{checked}");
    resumed(mongo, app, dir, drill).await;
}

/// New holds shed for the ledger's lag: the runbook's checks name the outlet and the
/// reason, show the lag, and name the outlet's owner.
#[actix_web::test]
async fn holds_shed() {
    let (mongo, app, dir) = stalled_ledger().await;
    let mut drill = Drill::new("holds-shed.md", &app);
    let checked = drill.run("Check").await;
    let shed = (checked.lines())
        .find(|l| l.starts_with("shelfsync_shed_total{"))
        .unwrap_or_else(|| panic!("no shed line: {checked}"));
    for label in [
        "operation=\"hold\"",
        &format!("outlet=\"{OUTLET}\""),
        "reason=\"ledger_lag\"",
    ] {
        assert!(shed.contains(label), "{shed}");
    }
    assert!(!shed.ends_with(" 0"), "{shed}");
    assert!(checked.contains("\"shedding_holds\":true"), "{checked}");
    assert!(
        checked.contains(&app.settings.cluster.node_id),
        "the owner: {checked}"
    );
    resumed(mongo, app, dir, drill).await;
}

/// The broker restarted twice (flapping), with the shipped ACL and an operators' user: the
/// runbook's checks show the reconnects, and its mosquitto_sub as `ops` reads shelfsync's
/// status and the broker's uptime.
#[actix_web::test]
async fn broker_down() {
    let (mut broker, dir, settings) = acl_broker(&[("ops", "ops-pw")], "sys_interval 1\n").await;
    let app = spawn_app_with(settings).await;
    assert!(mqtt_ready(&app).await);
    // Restarted twice by a job on the broker's host.
    for restarts in 1..=2 {
        broker.restart("-TERM").await;
        assert!(
            eventually(30, || async {
                metric(&app, "shelfsync_mqtt_reconnects_total").await == f64::from(restarts)
            })
            .await,
            "reconnected after restart {restarts}"
        );
        assert!(mqtt_ready(&app).await, "back after the restart");
    }
    let mut drill = Drill::new("broker-down.md", &app);
    let checked = drill.run("Check").await;
    assert!(
        checked.contains("shelfsync_mqtt_reconnects_total 2"),
        "{checked}"
    );
    assert!(checked.contains("shelfsync_mqtt_connected 1"), "{checked}");
    assert!(checked.contains("shelfsync/status "), "{checked}");
    assert!(checked.contains("$SYS/broker/uptime "), "{checked}");
    drill.done();
    app.finish().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
