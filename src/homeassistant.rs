//! Home Assistant MQTT discovery, pure: the retained config messages that make a camera
//! appear in Home Assistant by itself, and the telemetry payload its sensors read.
//!
//! Follows <https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery>: one
//! config per entity at `<discovery_prefix>/<component>/<node_id>/<object_id>/config`,
//! retained; entities of one camera share a `device` block (so Home Assistant groups
//! them) and an `origin` block. Availability comes from the camera's retained status
//! and its Last Will (`state` `online`/`offline`), which the signaling contract
//! already keeps.
//!
//! Entities:
//! - `camera` `snapshot`: JPEGs on [`Topics::snapshot`] (raw bytes, as the MQTT camera
//!   integration wants them);
//! - `sensor` `viewers`: open sessions, from the status;
//! - `sensor` `bitrate`: the encoder's output, kbit/s, from [`Topics::telemetry`];
//! - `binary_sensor` `online`: connectivity, from the status (no availability of its
//!   own, so it reads `off` when the camera is gone).

use crate::signaling::protocol::Topics;
use serde::Serialize;
use serde_json::{Value, json};

/// What the discovery configs are built from.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Home Assistant's discovery prefix (default `homeassistant`).
    pub prefix: String,
    /// The camera's signaling topics.
    pub topics: Topics,
    /// Display name of the device.
    pub name: String,
    /// edgecam version, for the device's `sw_version`.
    pub version: String,
}

/// One discovery message: retained `payload` (JSON) on `topic`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigMessage {
    /// `<prefix>/<component>/<node_id>/<object_id>/config`.
    pub topic: String,
    /// The entity's config.
    pub payload: Value,
}

/// The telemetry payload on [`Topics::telemetry`], JSON (snake case, as Home Assistant
/// templates read it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Telemetry {
    /// Open viewer sessions.
    pub viewers: u32,
    /// The encoder's output over the last interval, kbit/s (video and audio).
    pub bitrate_kbps: u64,
    /// Video frames per second encoded over the last interval.
    pub fps: f64,
}

impl Discovery {
    /// The node id: `edgecam_<camera>` (camera ids are already `[A-Za-z0-9_-]`, which
    /// is what Home Assistant allows there).
    fn node(&self) -> String {
        format!("edgecam_{}", self.topics.camera())
    }

    /// The config messages, one per entity.
    pub fn configs(&self) -> Vec<ConfigMessage> {
        let node = self.node();
        let status = self.topics.status();
        let device = json!({
            "identifiers": [node],
            "name": self.name,
            "manufacturer": "edgecam",
            "model": "edgecam WebRTC camera",
            "sw_version": self.version,
        });
        let origin = json!({
            "name": "edgecam",
            "sw_version": self.version,
        });
        let availability = json!([{
            "topic": status,
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }]);
        let entity = |component: &str, object: &str, fields: Value| {
            let mut payload = json!({
                "unique_id": format!("{node}_{object}"),
                "device": device,
                "origin": origin,
            });
            if let (Some(p), Some(f)) = (payload.as_object_mut(), fields.as_object()) {
                p.extend(f.clone());
            }
            ConfigMessage {
                topic: format!("{}/{component}/{node}/{object}/config", self.prefix),
                payload,
            }
        };
        vec![
            entity(
                "camera",
                "snapshot",
                json!({
                    "name": null,
                    "topic": self.topics.snapshot(),
                    "availability": availability,
                }),
            ),
            entity(
                "sensor",
                "viewers",
                json!({
                    "name": "Viewers",
                    "state_topic": status,
                    "value_template": "{{ value_json.viewers | default(0) }}",
                    "state_class": "measurement",
                    "icon": "mdi:eye",
                    "availability": availability,
                }),
            ),
            entity(
                "sensor",
                "bitrate",
                json!({
                    "name": "Bitrate",
                    "state_topic": self.topics.telemetry(),
                    "value_template": "{{ value_json.bitrate_kbps }}",
                    "unit_of_measurement": "kbit/s",
                    "device_class": "data_rate",
                    "state_class": "measurement",
                    "availability": availability,
                }),
            ),
            entity(
                "binary_sensor",
                "online",
                json!({
                    "name": "Online",
                    "state_topic": status,
                    "value_template": "{{ value_json.state }}",
                    "payload_on": "online",
                    "payload_off": "offline",
                    "device_class": "connectivity",
                    "entity_category": "diagnostic",
                }),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::protocol::Id;

    #[test]
    fn every_entity_has_its_topic_device_and_unique_id() {
        let d = Discovery {
            prefix: "homeassistant".into(),
            topics: Topics::new("edgecam", Id::parse("porch").unwrap()),
            name: "Porch".into(),
            version: "1.2.3".into(),
        };
        let configs = d.configs();
        let topics: Vec<&str> = configs.iter().map(|c| c.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/camera/edgecam_porch/snapshot/config",
                "homeassistant/sensor/edgecam_porch/viewers/config",
                "homeassistant/sensor/edgecam_porch/bitrate/config",
                "homeassistant/binary_sensor/edgecam_porch/online/config",
            ]
        );
        let camera = &configs[0].payload;
        assert_eq!(camera["topic"], "edgecam/porch/snapshot");
        assert_eq!(camera["unique_id"], "edgecam_porch_snapshot");
        assert_eq!(camera["device"]["identifiers"][0], "edgecam_porch");
        assert_eq!(camera["availability"][0]["topic"], "edgecam/porch/status");
        assert_eq!(configs[2].payload["state_topic"], "edgecam/porch/telemetry");
        assert!(configs[3].payload.get("availability").is_none());
        let t = serde_json::to_value(Telemetry {
            viewers: 2,
            bitrate_kbps: 812,
            fps: 30.0,
        })
        .unwrap();
        assert_eq!(t, json!({"viewers":2,"bitrate_kbps":812,"fps":30.0}));
    }
}
