//! What the load tools and the integration tests share: one Server-Sent Events parser, one
//! MQTT 5 client harness, brokers of their own and the clean-up of the shared servers, so
//! that every client in the tree reads the service the same way.

pub mod broker;
pub mod mqtt;
pub mod scratch;
pub mod sse;

/// splitmix64: the load tools' deterministic draws (the festival simulator's choices, the
/// forecast benchmark's simulated sales).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
