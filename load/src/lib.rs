//! What the load tools and the integration tests share: one Server-Sent Events parser, one
//! MQTT 5 client harness, brokers of their own and the clean-up of the shared servers, so
//! that every client in the tree reads the service the same way.

pub mod broker;
pub mod mqtt;
pub mod scratch;
pub mod sse;
