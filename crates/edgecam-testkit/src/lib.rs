//! Test and benchmark tooling for edgecam, shared by the integration suite
//! (`tests/`), the benchmark (`edgecam-bench`) and the device lab. Not part of the
//! shipped binary.
//!
//! - [`signal`]: the one viewer-side signaling client: a raw MQTT client on a
//!   session's topics ([`signal::Signal`]), and [`signal::ProbeSession`], edgecam's
//!   `peer::probe::ProbeViewer` driven through a whole session per the contract
//!   (`docs/signaling.md`: subscribe, offer, trickle ICE both ways, answer, `bye`).
//! - [`netns`]: network namespaces joined by veth pairs, for tests that cross a
//!   network without leaving the machine.
//! - [`feed`]: video feeds from a separate GStreamer process, for edgecam's
//!   `pipeline` source (capture faults on a machine without a camera, the soak).
//! - [`cpu`]: a CPU budget (a control group with a CFS quota) for a process under
//!   test, to play a board whose encoders cannot keep up.
//! - [`sound`]: a PulseAudio null sink to play talk-back on and record it, tone files,
//!   and a tone's measured frequency (two-way audio tests).

pub mod cpu;
pub mod delay;
pub mod feed;
pub mod netns;
pub mod signal;
pub mod sound;
