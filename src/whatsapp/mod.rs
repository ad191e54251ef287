//! WhatsApp orders: the messages of a webhook body (`message.rs`), kept in MongoDB before
//! the webhook answers (`store.rs`), and turned into reservations by a worker fed by a
//! bounded queue and a sweep (`worker.rs`), within the per-sender caps (`caps.rs`). The
//! webhook handler itself (signature, verification) is `http/whatsapp.rs`.

pub mod caps;
pub mod message;
pub mod store;
pub mod worker;

pub use worker::{start, Inbox};
