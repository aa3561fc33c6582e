//! `edgecam` command line: run the camera (default), list devices, check a config.

use clap::{Parser, Subcommand};
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

fn main() -> ExitCode {
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
        Some(Command::Run) | None => {}
    }
    if let Err(e) = edgecam::telemetry::init(
        config.log.target,
        &config.log.level,
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
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        match edgecam::app::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e:#}");
                ExitCode::from(1)
            }
        }
    })
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers");
        return;
    };
    for n in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n == 0 {
            log::info!("signal received: shutting down (again to exit at once)");
            shutdown.cancel();
        } else {
            log::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}
