//! edgecam: a low-latency WebRTC camera for Raspberry Pi-class boards, signaled over
//! MQTT. Data flows one way: capture → encode → hub → sessions → network, with
//! signaling on the side. See `docs/architecture.md`.

pub mod access;
pub mod app;
pub mod broker;
pub mod budget;
pub mod config;
pub mod homeassistant;
pub mod ice;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod peer;
pub mod selftest;
pub mod service;
pub mod signaling;
pub mod talk;
pub mod telemetry;
pub mod web;
pub mod whep;
