//! Deciding what to run before running it: the capture plan for a configuration on
//! this machine, and a reload's checks while the camera still runs.

use crate::broker;
use crate::config::{AudioSource, Config, VideoSource};
use crate::media::pipeline::{self, AudioPlan, PipelineDesc, Probe, VideoPlan};
use crate::media::{devices, gst};
use crate::signaling::mqtt;
use anyhow::Context as _;

/// Installs rustls's ring provider: rumqttd and rumqttc bring two crypto backends, and
/// rustls refuses to guess between them at run time.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Probes the machine for the configured sources.
pub fn probe(config: &Config) -> Probe {
    let mut probe = Probe::default();
    gst::probe_elements(&mut probe);
    if matches!(config.video.source, VideoSource::Auto | VideoSource::V4l2) {
        match devices::probe_v4l2(&config.video.device) {
            Ok(dev) => probe.v4l2 = dev.formats,
            Err(why) => probe.v4l2_problem = Some(why),
        }
    }
    if matches!(config.audio.source, AudioSource::Auto) {
        probe.alsa_capture = devices::alsa_can_capture(&config.audio.device);
    }
    probe
}

/// Resolves the pipeline for `config` on this machine, logging the choice.
///
/// # Errors
/// When an explicitly configured source or encoder is missing.
pub fn plan(config: &Config) -> anyhow::Result<PipelineDesc> {
    let probe = probe(config);
    let desc = pipeline::describe(&config.video, &config.audio, &probe)?;
    if let Some(n) = &desc.mode {
        log::info!("{}", n.summary);
    }
    log::info!("capture: {desc}");
    if desc.video == VideoPlan::Test && config.video.source == VideoSource::Auto {
        log::info!(
            "no camera found: streaming the test pattern{}",
            if desc.audio == AudioPlan::Test {
                " with a test tone"
            } else {
                ""
            }
        );
    }
    log::debug!("pipeline: {}", desc.launch);
    Ok(desc)
}

/// Checks what can be checked of a `next` configuration while the camera still runs
/// `current`, so that a reload never stops a working camera for a file that cannot
/// start: the capture plan (explicit sources, formats and encoders present), the CA
/// bundle of a TLS broker, the embedded broker's listen addresses when it is not
/// running yet, and the HTTP listen address when it changes (the running one is ours
/// and is freed on restart).
///
/// # Errors
/// The first check that fails, naming the configuration key.
pub fn preflight(next: &Config, current: &Config) -> anyhow::Result<()> {
    let desc = pipeline::describe(&next.video, &next.audio, &probe(next))?;
    log::debug!("reload preflight: capture {desc}");
    // `signaling.broker` was parsed with the file; the embedded broker's listeners
    // matter only when it is not running yet.
    match &next.signaling.broker {
        Some(url) => {
            mqtt::check_tls(url, next.signaling.ca_file.as_ref()).context("signaling.ca_file")?
        }
        None => broker::check(
            &next.broker,
            next.access.mode == crate::config::AccessMode::Invite,
        )
        .context("broker")?,
    }
    let http_kept = current.http.enabled && current.http.listen == next.http.listen;
    if next.http.enabled && !http_kept {
        std::net::TcpListener::bind(next.http.listen)
            .with_context(|| format!("http.listen {}", next.http.listen))?;
    }
    Ok(())
}
