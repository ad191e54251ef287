//! The MQTT 5 client harness of the load tools and the tests: a rumqttc client whose event
//! loop runs in a task of its own, handing every event to the caller's handler in order and
//! pausing before it reconnects after an error (rumqttc reconnects on the next poll, with no
//! pause of its own). `connect` returns once the broker's first ConnAck arrived.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::task::JoinHandle;

/// How long `connect` waits for the first ConnAck.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a connection error before the event loop reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Options for client `id` of the broker at `host:port` (MQTT 5, a clean start, a 10 s
/// keep-alive).
pub fn options(id: impl Into<String>, host: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(KEEP_ALIVE);
    options
}

/// A connected client; dropping it stops its event loop.
pub struct Client {
    pub client: AsyncClient,
    driver: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::ops::Deref for Client {
    type Target = AsyncClient;

    fn deref(&self) -> &AsyncClient {
        &self.client
    }
}

/// Starts a client with room for `requests` queued requests; `on_event` sees every event of
/// its event loop (a reconnect shows as another ConnAck).
pub async fn connect(
    options: MqttOptions,
    requests: usize,
    mut on_event: impl FnMut(Event) + Send + 'static,
) -> anyhow::Result<Client> {
    let (client, mut eventloop) = AsyncClient::new(options, requests);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    on_event(event);
                }
                Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
        }
    });
    let client = Client { client, driver };
    tokio::time::timeout(CONNECT_TIMEOUT, ready_rx)
        .await
        .map_err(|_| anyhow::anyhow!("no ConnAck within {CONNECT_TIMEOUT:?}"))??;
    Ok(client)
}
