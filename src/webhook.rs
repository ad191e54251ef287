//! Alerts to the chain's webhook (`alerts.webhook_url`), signed, in order, at least once.
//!
//! Each alert is POSTed as JSON with two headers:
//!
//! - `X-Shelfsync-Signature: t={unix seconds},v1={hex}`, the HMAC-SHA256 under
//!   `alerts.webhook_secret` of `{t}.{body}`: a receiver recomputes it and refuses a body it
//!   does not match or a `t` too old (a replay);
//! - `X-Shelfsync-Delivery: {alert id}:{state}`, the same on every try of one delivery, so
//!   a receiver that got a try whose answer was lost can tell the retry.
//!
//! The queue is bounded by `alerts.queue_max`: when it is full the oldest alert is dropped
//! and counted (`shelfsync_alert_deliveries_total{channel="webhook",outcome="dropped"}`);
//! `GET /v1/alerts` still lists what is raised. A delivery is tried up to
//! `alerts.webhook_attempts` times with doubling pauses; an answer other than 2xx, a timeout
//! or a refused connection is a failed try, but a 4xx other than 408 and 429 ends it (the
//! receiver will not take it). One given up is counted `outcome="failed"`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tracing::warn;

use crate::alerts::Alert;
use crate::feed::push_dropping_oldest;
use crate::metrics::Metrics;
use crate::settings::AlertSettings;

pub struct Webhook {
    queue: Mutex<VecDeque<Arc<Alert>>>,
    notify: Notify,
    client: reqwest::Client,
    settings: AlertSettings,
    metrics: Arc<Metrics>,
}

/// The signature header's value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    /// None when no webhook is configured.
    pub fn new(
        settings: &AlertSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if settings.webhook_url.expose().is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.webhook_timeout_ms))
            .build()
            .context("building the alert webhook's HTTP client")?;
        Ok(Some(Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            client,
            settings: settings.clone(),
            metrics,
        })))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Alert>>> {
        self.queue.lock().expect("webhook queue")
    }

    /// Queues an alert; never waits.
    pub fn push(&self, alert: Arc<Alert>) {
        {
            let mut q = self.queue();
            if push_dropping_oldest(&mut q, alert, self.settings.queue_max) {
                (self.metrics.alert_deliveries)
                    .with_label_values(&["webhook", "dropped"])
                    .inc();
            }
            self.metrics.alert_webhook_queue.set(q.len() as i64);
        }
        self.notify.notify_one();
    }

    /// Delivers the queue, one alert at a time in order, until `stop` is set.
    pub fn spawn(self: Arc<Self>, stop: Arc<AtomicBool>) {
        actix::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                // Out of the queue while it is tried: a full queue drops the oldest waiting.
                let next = self.queue().pop_front();
                let Some(alert) = next else {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.notify.notified()).await;
                    continue;
                };
                let outcome = self.deliver(&alert, &stop).await;
                (self.metrics.alert_deliveries)
                    .with_label_values(&["webhook", outcome])
                    .inc();
                self.metrics
                    .alert_webhook_queue
                    .set(self.queue().len() as i64);
            }
        });
    }

    async fn deliver(&self, alert: &Alert, stop: &AtomicBool) -> &'static str {
        let body = serde_json::json!(alert).to_string();
        let delivery = format!("{}:{}", alert.id, alert.state.as_str());
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=self.settings.webhook_attempts.max(1) {
            let t = chrono::Utc::now().timestamp();
            let sent = (self.client)
                .post(self.settings.webhook_url.expose())
                .header("content-type", "application/json")
                .header(
                    "x-shelfsync-signature",
                    signature(self.settings.webhook_secret.expose(), t, &body),
                )
                .header("x-shelfsync-delivery", &delivery)
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(r) if r.status().is_success() => return "delivered",
                Ok(r) => {
                    let status = r.status().as_u16();
                    if (400..500).contains(&status) && status != 408 && status != 429 {
                        warn!(%delivery, status, "the alert webhook refused an alert; given up");
                        return "failed";
                    }
                    format!("status {status}")
                }
                // Without the URL (a secret: a receiver's URL carries its token, and reqwest
                // names it in every error), with the causes (connection refused, timed out).
                Err(e) => format!("{:#}", anyhow::Error::new(e.without_url())),
            };
            warn!(%delivery, attempt, error = %why, "an alert webhook delivery failed");
            if stop.load(Ordering::Acquire) {
                break;
            }
            if attempt < self.settings.webhook_attempts {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
        "failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_time_and_body() {
        // Computed apart from this code (Python's hmac module).
        assert_eq!(
            signature("secret-of-the-chain", 1_765_000_000, r#"{"id":"a"}"#),
            "t=1765000000,v1=5eddc7eafba15f0dc3fbab11c0d6501b889a287b431c2ee9e691fc518056acd6"
        );
    }
}
