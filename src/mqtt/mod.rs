//! MQTT: the session with the broker (POS movements in; retained stock, orders and status
//! out) and the topic codec.

pub mod outbound;
pub mod pos;
pub mod session;
pub mod topics;

pub use session::{Disconnect, MqttSession};
