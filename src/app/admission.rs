//! Who may talk to the camera: in invite mode every viewer message passes the
//! [`Gate`] before the signaling machine sees it, and everything the camera sends a
//! session it admitted goes out sealed with that viewer's key. In open mode both are
//! the identity.

use crate::access::gate::{AccessPolicy, Admitted, Gate};
use crate::access::refusals::Refusals;
use crate::access::store;
use crate::config::{AccessMode, Config};
use crate::signaling::machine::Machine;
use crate::signaling::mqtt::MqttHandle;
use crate::signaling::protocol::{ErrorCode, SessionId, ToViewer};
use crate::telemetry::{RateLimit, suppressed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// systemd-timesyncd's flag file: present once the clock was synchronised.
const TIMESYNC_FLAG: &str = "/run/systemd/timesync/synchronized";

/// The camera's admission policy as the run loop applies it.
pub(super) struct Admission {
    gate: Option<Gate>,
    refusal_log: RateLimit,
    refusals: Arc<Refusals>,
}

impl Admission {
    /// Open mode (warned about), or invite mode with the access secret loaded or
    /// generated.
    ///
    /// # Errors
    /// The access secret cannot be read or created.
    pub(super) fn from_config(config: &Config, camera_id: &str) -> anyhow::Result<Self> {
        let gate = match config.access.mode {
            AccessMode::Open => {
                log::warn!(
                    "access mode open: anyone who reaches the broker can watch, listen and \
                     answer as this camera; set [access] mode = \"invite\" (docs/security.md)"
                );
                None
            }
            AccessMode::Invite => {
                let (secret, from) = store::load_or_create(config.access.secret_file.as_deref())?;
                log::info!(
                    "access mode invite: only invited viewers (secret in {}, {} revoked)",
                    from.display(),
                    config.access.revoked.len()
                );
                Some(Gate::new(AccessPolicy {
                    camera_id: camera_id.to_owned(),
                    secret,
                    revoked: config.access.revoked.iter().cloned().collect(),
                }))
            }
        };
        Ok(Self {
            gate,
            refusal_log: RateLimit::new(Duration::from_secs(10)),
            refusals: Arc::default(),
        })
    }

    /// The invite policy, for the HTTP endpoints' bearer tokens (`None`: open).
    pub(super) fn policy(&self) -> Option<crate::access::gate::AccessPolicy> {
        self.gate.as_ref().map(|g| g.policy().clone())
    }

    /// Refused requests by front-end and reason (MQTT here, HTTP in `web`).
    pub(super) fn refusals(&self) -> Arc<Refusals> {
        self.refusals.clone()
    }

    /// Whom the embedded broker should admit.
    pub(super) fn broker(&self) -> crate::broker::Admission {
        match &self.gate {
            None => crate::broker::Admission::Open,
            Some(g) => crate::broker::Admission::Invite(g.policy().clone()),
        }
    }

    /// Whether requests must be signed (the status advertises `signed-v1`).
    pub(super) fn signed(&self) -> bool {
        self.gate.is_some()
    }

    /// Hands a viewer's `payload` to the machine if the gate admits it; a refused one
    /// gets a plain `error` `unauthorized` and reaches nothing else.
    pub(super) fn inbound(
        &mut self,
        machine: &mut Machine,
        link: &MqttHandle,
        session: SessionId,
        payload: &[u8],
    ) {
        let Some(gate) = self.gate.as_mut() else {
            machine.handle_message(Instant::now(), session, payload);
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let synced = std::path::Path::new(TIMESYNC_FLAG).exists();
        match gate.admit(&session, payload, now_ms, synced) {
            Ok(Admitted::Signed { inner, .. }) => {
                machine.handle_message(Instant::now(), session, inner.as_bytes());
            }
            Ok(Admitted::Plain) => machine.handle_message(Instant::now(), session, payload),
            Err(why) => {
                self.refusals.count("mqtt", why.0);
                if let Some(held_back) = self.refusal_log.check(Instant::now()) {
                    log::warn!(session_id = session.as_str(); "unauthorized request on session {session}: {why}{}", suppressed(held_back));
                }
                link.send(&session, &ToViewer::error(ErrorCode::Unauthorized, why.0));
            }
        }
    }

    /// `session` ended: its captured requests must not reopen it.
    pub(super) fn session_ended(&mut self, session: &SessionId) {
        if let Some(gate) = self.gate.as_mut() {
            gate.session_ended(session);
        }
    }

    /// What to publish for the camera's `msg` to `session`.
    pub(super) fn seal(&self, session: &SessionId, msg: &ToViewer) -> Vec<u8> {
        match &self.gate {
            None => msg.to_json(),
            Some(gate) => {
                let json = String::from_utf8(msg.to_json()).unwrap_or_default();
                gate.seal(session, json).into_bytes()
            }
        }
    }
}
