//! Running the camera across configuration reloads, so that a reload never takes a
//! working camera down:
//! 1. a file that does not parse or validate never gets here (the signal watcher
//!    refuses it);
//! 2. a valid one is checked against this machine while the camera keeps running
//!    ([`super::preflight`]) and refused when that fails;
//! 3. otherwise the camera restarts in-process with it (viewers get `bye` and
//!    reconnect); should that start still fail, the previous configuration is started
//!    again, with a log line and `STATUS=` saying so.
//!
//! Generic over [`Lifecycle`] so that the rules are tested with injected start
//! failures; the camera's implementation is [`CameraLifecycle`].

use crate::config::Config;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a service is checked, started and run; what [`serve`] needs of the camera.
pub trait Lifecycle {
    /// A started service.
    type Running;

    /// Checks `next` while `current` runs (see [`super::preflight`]).
    ///
    /// # Errors
    /// Why `next` cannot start here.
    fn preflight(&self, next: &Config, current: &Config) -> anyhow::Result<()>;

    /// Starts the service for `config`, leaving nothing running when it fails.
    ///
    /// # Errors
    /// Start-up failures.
    fn start(
        &self,
        config: Config,
    ) -> impl std::future::Future<Output = anyhow::Result<Self::Running>>;

    /// Runs a started service until `stop` is cancelled, then stops it.
    fn run(
        &self,
        running: Self::Running,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()>;

    /// Tells the supervisor (systemd `STATUS=`) what happened.
    fn status(&self, text: &str);

    /// Tells the supervisor a reload begins (systemd `RELOADING=1`).
    fn reloading(&self);
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `shutdown` was cancelled, or the service stopped by itself.
    Stopped,
    /// The first start failed, or a failed reload's previous configuration did not
    /// start again either.
    StartFailed,
    /// The first start failed for a reason a restart cannot fix: the access secret
    /// cannot be read or created (a read-only or full state directory, a missing
    /// `secret_file`). The process should exit so that systemd does not restart it
    /// (`RestartPreventExitStatus=`).
    CannotStart,
}

/// Starts `config` and runs it until `shutdown`, applying each configuration received
/// on `reloads` by the rules of this module's documentation.
pub async fn serve<L: Lifecycle>(
    lifecycle: &L,
    config: Config,
    mut reloads: mpsc::Receiver<Config>,
    shutdown: CancellationToken,
) -> Served {
    let mut current = config;
    let mut running = match lifecycle.start(current.clone()).await {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e:#}");
            if e.downcast_ref::<crate::access::store::StoreError>()
                .is_some()
            {
                log::error!(
                    "not starting until this is fixed: restarting cannot help (exit status 78)"
                );
                return Served::CannotStart;
            }
            return Served::StartFailed;
        }
    };
    loop {
        let run_stop = shutdown.child_token();
        let run = lifecycle.run(running, run_stop.clone());
        tokio::pin!(run);
        let next = loop {
            tokio::select! {
                () = &mut run => return Served::Stopped,
                next = reloads.recv() => {
                    let Some(next) = next else {
                        run.await;
                        return Served::Stopped;
                    };
                    match lifecycle.preflight(&next, &current) {
                        Ok(()) => break next,
                        Err(e) => {
                            log::error!("SIGHUP: {e:#}; keeping the running configuration");
                            lifecycle.status(&format!(
                                "reload refused ({e}); running the previous configuration"
                            ));
                        }
                    }
                }
            }
        };
        log::info!("reloading: restarting with the new configuration");
        lifecycle.reloading();
        run_stop.cancel();
        run.await;
        if shutdown.is_cancelled() {
            return Served::Stopped;
        }
        running = match lifecycle.start(next.clone()).await {
            Ok(r) => {
                current = next;
                r
            }
            Err(e) => {
                log::error!("reload failed: {e:#}; going back to the previous configuration");
                let restarted = lifecycle.start(current.clone()).await;
                lifecycle.status(&format!(
                    "reload failed ({e}); running the previous configuration"
                ));
                match restarted {
                    Ok(r) => r,
                    Err(e) => {
                        log::error!("the previous configuration does not start either: {e:#}");
                        return Served::StartFailed;
                    }
                }
            }
        };
    }
}

/// The camera's [`Lifecycle`]: [`super::start`], [`super::Camera::run`],
/// [`super::preflight`] and systemd notifications.
pub struct CameraLifecycle {
    /// Where `STATUS=` and `RELOADING=1` go.
    pub notifier: crate::service::Notifier,
}

impl Lifecycle for CameraLifecycle {
    type Running = super::Camera;

    fn preflight(&self, next: &Config, current: &Config) -> anyhow::Result<()> {
        super::preflight(next, current)
    }

    async fn start(&self, config: Config) -> anyhow::Result<super::Camera> {
        super::start(config).await
    }

    async fn run(&self, running: super::Camera, stop: CancellationToken) {
        running.run(stop).await;
    }

    fn status(&self, text: &str) {
        self.notifier.status(text);
    }

    fn reloading(&self) {
        self.notifier.reloading();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A service whose start fails for configurations named `broken` (and, once
    /// `fail_all` is set, for every one), recording what happened.
    #[derive(Default)]
    struct Fake {
        events: Mutex<Vec<String>>,
        fail_all: std::sync::atomic::AtomicBool,
        refuse: Option<&'static str>,
    }

    fn named(name: &str) -> Config {
        let mut c = Config::default();
        c.camera.name = Some(name.to_owned());
        c
    }

    fn name(c: &Config) -> String {
        c.camera.name.clone().unwrap_or_default()
    }

    impl Fake {
        fn log(&self, e: String) {
            self.events.lock().unwrap().push(e);
        }
        fn events(&self) -> Vec<String> {
            self.events.lock().unwrap().clone()
        }
    }

    impl Lifecycle for Fake {
        type Running = String;

        fn preflight(&self, next: &Config, _current: &Config) -> anyhow::Result<()> {
            match self.refuse {
                Some(n) if name(next) == n => anyhow::bail!("{n} cannot run here"),
                _ => Ok(()),
            }
        }

        async fn start(&self, config: Config) -> anyhow::Result<String> {
            let n = name(&config);
            if n == "broken" || self.fail_all.load(std::sync::atomic::Ordering::Relaxed) {
                self.log(format!("start {n} failed"));
                anyhow::bail!("injected start failure of {n}");
            }
            self.log(format!("start {n}"));
            Ok(n)
        }

        async fn run(&self, running: String, stop: CancellationToken) {
            stop.cancelled().await;
            self.log(format!("stop {running}"));
        }

        fn status(&self, text: &str) {
            self.log(format!("STATUS={text}"));
        }

        fn reloading(&self) {
            self.log("RELOADING=1".into());
        }
    }

    /// Feeds `configs` as reloads, one at a time, then shuts down.
    async fn drive(fake: &Fake, configs: Vec<Config>) -> Served {
        let (tx, rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let feeder = async move {
            for c in configs {
                tx.send(c).await.unwrap();
                // Let the loop act on it before the next one.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            stop.cancel();
        };
        let (served, ()) = tokio::join!(serve(fake, named("before"), rx, shutdown), feeder);
        served
    }

    #[tokio::test]
    async fn a_start_failure_goes_back_to_the_previous_configuration() {
        let fake = Fake::default();
        let served = drive(&fake, vec![named("broken"), named("after")]).await;
        assert_eq!(served, Served::Stopped);
        assert_eq!(
            fake.events(),
            [
                "start before",
                "RELOADING=1",
                "stop before",
                "start broken failed",
                "start before",
                "STATUS=reload failed (injected start failure of broken); running the previous configuration",
                // The camera still takes the next good reload.
                "RELOADING=1",
                "stop before",
                "start after",
                "stop after",
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_preflight_never_stops_the_running_service() {
        let fake = Fake {
            refuse: Some("no-device"),
            ..Fake::default()
        };
        drive(&fake, vec![named("no-device")]).await;
        assert_eq!(
            fake.events(),
            [
                "start before",
                "STATUS=reload refused (no-device cannot run here); running the previous configuration",
                "stop before",
            ]
        );
    }

    #[tokio::test]
    async fn when_the_previous_configuration_fails_too_serve_reports_it() {
        let fake = Fake::default();
        let (tx, rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let serving = serve(&fake, named("before"), rx, shutdown.clone());
        let feeder = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            fake.fail_all
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tx.send(named("after")).await.unwrap();
        };
        let (served, ()) = tokio::join!(serving, feeder);
        assert_eq!(served, Served::StartFailed);
        assert_eq!(
            fake.events(),
            [
                "start before",
                "RELOADING=1",
                "stop before",
                "start after failed",
                "start before failed",
                "STATUS=reload failed (injected start failure of after); running the previous configuration",
            ]
        );
        assert!(!shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn a_failed_first_start_is_reported() {
        let fake = Fake::default();
        let (_tx, rx) = mpsc::channel(1);
        let served = serve(&fake, named("broken"), rx, CancellationToken::new()).await;
        assert_eq!(served, Served::StartFailed);
    }
}
