//! Invite mode (`shared/design/access-v1.md`): only viewers holding an invitation from
//! the camera may start or change a session, and the camera's messages to them are
//! authenticated, whoever runs the broker.
//!
//! - [`keys`]: the access secret, viewer keys and tokens (pure).
//! - [`gate`]: admits signed requests, drops replays, seals replies (sans-IO).
//! - [`invite`]: invitation links and `--ttl` values (pure).
//! - [`refusals`]: counts of refused requests by front-end and reason (`/metrics`).
//! - [`store`]: the secret's file (configured, or generated in the state directory).

pub mod gate;
pub mod invite;
pub mod keys;
pub mod refusals;
pub mod store;
