//! `edgecam` command line: run the camera (default), list devices, check a config.

use clap::{Parser, Subcommand};
use edgecam::app::reload;
use edgecam::config::Config;
use edgecam::media::devices;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edgecam",
    version,
    about = "Low-latency WebRTC camera, signaled over MQTT"
)]
struct Cli {
    /// Configuration file (TOML); without one, the built-in standalone defaults.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and print the capture plan, then exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the camera (the default).
    Run,
    /// List V4L2 capture devices with formats, sizes and rates, and ALSA capture PCMs.
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print an invitation link for a viewer (invite mode): the page URL with the
    /// broker, camera, name, expiry and viewer key in its fragment, and a QR code.
    Invite {
        /// Viewer name, [A-Za-z0-9_.-]{1,64}; revoke it by name in [access] revoked.
        #[arg(long)]
        name: String,
        /// How long the invitation lasts: 90s, 15m, 12h, 30d (at most 3650d).
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// The viewer page's URL; default: this host's page, http://<host>.local:<port>/.
        #[arg(long)]
        page_url: Option<String>,
        /// Print only the link (no QR code).
        #[arg(long)]
        no_qr: bool,
    },
    /// Test the media path on this machine: capture → encoder → a viewer session → a
    /// loopback WebRTC viewer; reports frames received. No broker or network needed.
    Selftest {
        /// Seconds to receive once connected (1–3600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// Use the test pattern and tone instead of the configured camera and microphone.
        #[arg(long)]
        test_source: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let result = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::parse("", "built-in defaults"),
    };
    result.map_err(|e| {
        eprintln!("edgecam: {e}");
        ExitCode::from(2)
    })
}

/// `edgecam invite`: mints the link from the service's access secret.
fn invite(config: &Config, name: &str, ttl: &str, page_url: Option<&str>, no_qr: bool) -> ExitCode {
    use edgecam::access::{invite, keys, store};
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("edgecam invite: {e}");
        ExitCode::from(2)
    };
    if let Err(e) = keys::check_name(name) {
        return fail(&e);
    }
    let ttl = match invite::parse_ttl(ttl) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let (secret, _) = match store::load(config.access.secret_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            return fail(&format_args!(
                "{e} (the service creates it at its first start in invite mode)"
            ));
        }
    };
    if config.access.mode == edgecam::config::AccessMode::Open {
        eprintln!(
            "edgecam invite: note: [access] mode is \"open\": the camera admits anyone until it is \"invite\""
        );
    }
    if config.access.revoked.iter().any(|r| r == name) {
        return fail(&format_args!("{name} is in [access] revoked"));
    }
    let camera = config.camera_id();
    let exp = edgecam::ice::unix_now().saturating_add(ttl.as_secs());
    let key = keys::ViewerKey::derive(&secret, camera.as_str(), name, exp);
    let default_page;
    let page = match page_url {
        Some(p) => p,
        None => {
            let host = rustix::system::uname();
            let host = host.nodename().to_string_lossy().into_owned();
            default_page = format!("http://{host}.local:{}/", config.http.listen.port());
            &default_page
        }
    };
    let link = invite::link(
        page,
        &invite::Invitation {
            broker_ws: config.http.broker_ws_url.as_deref(),
            prefix: &config.signaling.prefix,
            camera: camera.as_str(),
            name,
            exp,
            key: &key,
        },
    );
    println!("{link}");
    if !no_qr && let Ok(code) = qrcode::QrCode::new(link.as_bytes()) {
        println!(
            "{}",
            code.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        );
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    edgecam::memory::limit_arenas();
    edgecam::memory::refuse_huge_pages();
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Devices { json }) => {
            let v4l2 = devices::v4l2_devices();
            let pcms = devices::alsa_capture_pcms();
            if json {
                let doc = serde_json::json!({ "v4l2": v4l2, "alsa": pcms });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", devices::render(&v4l2, &pcms));
            }
            return ExitCode::SUCCESS;
        }
        Some(Command::Invite {
            ref name,
            ref ttl,
            ref page_url,
            no_qr,
        }) => return invite(&config, name, ttl, page_url.as_deref(), no_qr),
        Some(Command::Run | Command::Selftest { .. }) | None => {}
    }
    if let Err(e) = edgecam::telemetry::init(
        config.log.target,
        config.log.level.as_str(),
        config.camera_id().as_str(),
    ) {
        eprintln!("edgecam: logging: {e}");
        return ExitCode::from(2);
    }
    if cli.check_config {
        if let Err(e) = edgecam::media::gst::init() {
            eprintln!("edgecam: {e}");
            return ExitCode::from(1);
        }
        return match edgecam::app::plan(&config) {
            Ok(desc) => {
                let busy = matches!(desc.video, edgecam::media::pipeline::VideoPlan::V4l2(_))
                    .then(|| edgecam::media::devices::v4l2_busy(&config.video.device))
                    .flatten();
                if let Some(busy) = busy {
                    eprintln!("edgecam: video source v4l2: {busy}");
                    return ExitCode::from(2);
                }
                println!("configuration OK: camera {}; {desc}", config.camera_id());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgecam: {e}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgecam: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::Selftest {
        seconds,
        test_source,
        json,
    }) = cli.command
    {
        let options = edgecam::selftest::SelftestOptions {
            duration: std::time::Duration::from_secs(seconds),
            test_source,
        };
        return runtime.block_on(selftest(config, options, json));
    }
    runtime.block_on(serve(config, cli.config.clone()))
}

/// Exit status: 0 passed, 1 failed (with the report), 2 could not run.
async fn selftest(
    config: Config,
    options: edgecam::selftest::SelftestOptions,
    json: bool,
) -> ExitCode {
    match edgecam::selftest::run(config, &options).await {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("{report}");
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("edgecam selftest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the camera until SIGTERM/SIGINT; SIGHUP reloads the configuration file by the
/// rules of `edgecam::app::reload` (a reload never takes a working camera down).
async fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<Config>(1);
    let notifier = edgecam::service::Notifier::from_env();
    tokio::spawn(watch_signals(
        shutdown.clone(),
        reload_tx,
        path,
        notifier.clone(),
    ));
    let lifecycle = reload::CameraLifecycle {
        notifier: notifier.clone(),
    };
    let served = reload::serve(&lifecycle, config, reload_rx, shutdown).await;
    // Notifications are written by a thread of their own: let STOPPING=1 and the last
    // status reach systemd before the process ends.
    notifier.flush(std::time::Duration::from_millis(500));
    match served {
        reload::Served::Stopped => ExitCode::SUCCESS,
        reload::Served::StartFailed => ExitCode::from(1),
        // EX_CONFIG (sysexits.h): the unit's RestartPreventExitStatus= stops the loop.
        reload::Served::CannotStart => ExitCode::from(78),
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once. SIGHUP: re-read the
/// configuration file and hand it over when it is valid.
async fn watch_signals(
    shutdown: CancellationToken,
    reload: tokio::sync::mpsc::Sender<Config>,
    path: Option<PathBuf>,
    notifier: edgecam::service::Notifier,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        log::error!("cannot install signal handlers");
        return;
    };
    let mut stops = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                match &path {
                    None => log::warn!("SIGHUP: running on built-in defaults, no configuration file to reload"),
                    Some(p) => match Config::load(p) {
                        Ok(new) => {
                            if reload.try_send(new).is_err() {
                                log::warn!("SIGHUP: a reload is already under way");
                            }
                        }
                        Err(e) => log::error!("SIGHUP: {e}; keeping the running configuration"),
                    },
                }
                continue;
            }
        }
        stops += 1;
        if stops == 1 {
            log::info!("signal received: shutting down (again to exit at once)");
            notifier.stopping("stopping");
            shutdown.cancel();
        } else {
            log::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}
