//! `Services`, the core's one context: what the actors share (stores, stock view,
//! durability, metrics, feed, hub), the outlet actors, the catalogue, zones, settings and
//! what re-routing keeps. The checkout core, movements and both edges work through it.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use crate::actors::ledger_writer::provably_durable;
use crate::actors::outlet::Drain;
use crate::actors::{OutletActor, Ownership, Shared};
use crate::domain::{now_ms, OutletId};
use crate::error::Error;
use crate::keys::ClaimKind;
use crate::live_catalogue::LiveCatalogue;
use crate::reroute_state::RerouteState;
use crate::settings::Settings;
use crate::zones::Zones;

pub struct Services {
    /// What the actors share; beyond it, the core uses the store only for chain-wide claims
    /// of client keys (`claim_key`), and the WhatsApp worker for its per-sender holds.
    pub shared: Shared,
    /// The catalogue as it is now (`catalogue.now()`): the CSV with the SKU edits over it.
    pub catalogue: Arc<LiveCatalogue>,
    pub settings: Arc<Settings>,
    pub zones: Zones,
    pub reroute: RerouteState,
    /// Which outlets this process owns, and the rounds that take them.
    pub ownership: Arc<Ownership>,
    /// One `grow` at a time.
    pub growing: tokio::sync::Mutex<()>,
    /// Outlets `grow` added whose ownership round has not yet run through.
    pub pending: std::sync::Mutex<std::collections::HashSet<OutletId>>,
    /// Counts the `grow` passes that ran through, for `outlet_ready`.
    pub grown: tokio::sync::watch::Sender<u64>,
    /// The last POS message received per outlet (war_room.rs).
    pub pos_links: Arc<crate::war_room::PosLinks>,
}

impl Services {
    /// Gives every outlet of the catalogue this process does not know yet (one added while
    /// running, here or by another process) its place in the per-outlet structures: the
    /// stock view, the durable watermark (at what the ledger provably holds of it), the
    /// re-route state, the ledger writer and the follower; then runs an ownership round, so
    /// that it is owned at once when rendezvous gives it to this process, and waits for
    /// what the round started to load. An outlet stays `pending` until a round ran through
    /// after it was added; a failed pass is tried again whole by the next. Runs only on the
    /// core's own task (app.rs), so that the actors it starts live on the core's thread.
    pub async fn grow(&self) -> anyhow::Result<Vec<OutletId>> {
        let _one = self.growing.lock().await;
        let shared = &self.shared;
        let new: Vec<OutletId> = (self.catalogue.now().outlets.iter())
            .filter(|o| !shared.signal.knows(&o.id))
            .map(|o| o.id.clone())
            .collect();
        for id in &new {
            let durable = provably_durable(&shared.store, &shared.ledger, id).await?;
            shared.stock.add(id);
            shared.durable.add(id, durable);
            self.reroute.add(id);
            // From here the writer drains it and the follower follows it.
            shared.signal.add(id.clone(), shared.store.keys(id));
            self.ownership.add(id);
            self.pending
                .lock()
                .expect("pending lock")
                .insert(id.clone());
        }
        if !self.pending.lock().expect("pending lock").is_empty() {
            let (started, _) = self.ownership.round().await?;
            for addr in started {
                let _ = addr.send(Drain).await;
            }
            self.pending.lock().expect("pending lock").clear();
        }
        if !new.is_empty() {
            tracing::info!(outlets = ?new, "outlets added while running");
        }
        self.grown.send_modify(|n| *n += 1);
        Ok(new)
    }

    /// Wakes `grow` and waits, at most `wait`, until it has made room for `outlet` here (and
    /// taken it, when rendezvous gives it to this process). Whether it did.
    pub async fn outlet_ready(&self, outlet: &OutletId, wait: Duration) -> bool {
        let ready = || {
            self.shared.signal.knows(outlet)
                && !self.pending.lock().expect("pending lock").contains(outlet)
        };
        let mut passes = self.grown.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            passes.borrow_and_update();
            if ready() {
                return true;
            }
            self.catalogue.outlet_added.notify_one();
            let next = tokio::time::timeout_at(deadline, passes.changed()).await;
            if !matches!(next, Ok(Ok(()))) {
                return ready();
            }
        }
    }

    /// The actor of an outlet this process owns. An outlet of the chain that another
    /// process owns (or that is moving between processes) is `503` with `Retry-After`,
    /// naming the outlet, so that the HTTP edge forwards the request to its owner
    /// (http/forward.rs; ARCHITECTURE.md, Several processes).
    pub fn outlet(&self, id: &OutletId) -> Result<Addr<OutletActor>, Error> {
        if let Some(addr) = self.shared.owners.get(id) {
            return Ok(addr);
        }
        if self.catalogue.now().outlet(id).is_none() {
            return Err(Error::NotFound(format!("no outlet '{id}'")));
        }
        Err(Error::Overloaded {
            message: format!(
                "outlet {id} is owned by another process of the service, or is moving between \
                 them; nothing was changed, try again shortly"
            ),
            retry_after_secs: 1,
            elsewhere: Some(id.clone()),
        })
    }

    /// Claims a client key for `outlet`; 409 when another outlet already has it. True when
    /// this call made the claim (the key is new), false when the outlet already had it.
    pub async fn claim_key(
        &self,
        kind: ClaimKind,
        key: &str,
        outlet: &OutletId,
        ttl_secs: u64,
    ) -> Result<bool, Error> {
        let claim = self
            .shared
            .store
            .claim(kind, key, outlet, ttl_secs)
            .await
            .map_err(Error::store)?;
        if claim.owner != outlet.as_str() {
            return Err(Error::conflict(format!(
                "this key was already used for outlet {}",
                claim.owner
            )));
        }
        Ok(claim.fresh)
    }

    /// Whether a customer's new hold may be taken at `outlet` now. Past the ledger lag budget
    /// (`ledger.lag_max_secs`: the age of the outlet's oldest change not yet durable), new
    /// holds are refused with nothing changed, so that the ledger catches up and counter
    /// sales, confirms and the other facts keep their latency (see ARCHITECTURE.md,
    /// Overload).
    /// The caller counts what it sheds (`shed`): a request this refuses may still be let
    /// through (the retry of a key the outlet already holds).
    pub fn admit_hold(&self, outlet: &OutletId) -> Result<(), Error> {
        let budget_ms = self.settings.ledger.lag_max_secs.saturating_mul(1000) as i64;
        let lag = self.shared.durable.lag(outlet, now_ms());
        if lag.age_ms <= budget_ms {
            return Ok(());
        }
        let over_ms = (lag.age_ms - budget_ms) as u64;
        Err(Error::Overloaded {
            message: format!(
                "the ledger of {outlet} is {:.1} s behind (budget {} s): new holds wait until it \
                 catches up; nothing was held, try again shortly",
                lag.age_ms as f64 / 1000.0,
                self.settings.ledger.lag_max_secs
            ),
            retry_after_secs: over_ms.div_ceil(1000).clamp(1, 30),
            elsewhere: None,
        })
    }

    /// Counts a request refused to keep within a budget (`shelfsync_shed_total`).
    pub fn shed(&self, outlet: &OutletId, operation: &str, reason: &str) {
        self.shared
            .metrics
            .shed
            .with_label_values(&[outlet.as_str(), operation, reason])
            .inc();
    }

    pub fn durable_wait(&self) -> Duration {
        Duration::from_secs(self.settings.ledger.durable_wait_secs)
    }
}
