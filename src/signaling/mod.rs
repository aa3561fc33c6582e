//! Signaling over MQTT, protocol 1 (`docs/signaling.md`).
//!
//! - [`protocol`]: messages and topics (pure).
//! - [`machine`]: the sans-IO session state machine (pure, time passed in).
//! - [`mqtt`]: the one `rumqttc` adapter (backoff, resubscribe, Last Will, status).

pub mod machine;
pub mod mqtt;
pub mod protocol;
