#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, then runs
# unit, integration (Mosquitto, GStreamer, webrtc-rs), browser (Chromium), device-lab
# (QEMU) and Raspberry Pi cross-build (arm64 and armhf under qemu-user, .debs) tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's wall time and the disk space left after it go to stderr, so a CI log shows
# where its minutes and gigabytes went; a failing step's too, and its status is passed on.
timed() {
  local t0=$SECONDS rc=0 failed=""
  "$@" || rc=$?
  ((rc == 0)) || failed=" (exit $rc)"
  echo "test.sh: $((SECONDS - t0)) s: $*$failed; $(df -h --output=avail . | tail -1 | tr -d ' ') free" >&2
  return "$rc"
}
# A CI machine's disk is whatever is left of it (once under 300 MB; stop 29's run ran out
# of it while linking the test binaries): a CI run keeps only what a later step uses.
# Incremental compilation pays off only for a rebuild (1.1 GB of target/debug).
if [[ -n "${CI:-}" ]]; then
  export CARGO_INCREMENTAL=0
fi
timed scripts/setup.sh --test
# The device-lab VM image (tests/lab.rs; cached, so only a fresh machine builds it):
# about 4 minutes of mostly downloading and unpacking, so it goes on beside the
# CPU-bound steps below instead of in front of the lab test. The test waits on the
# cache's lock if it is still being built, and reports a failed build itself.
mkdir -p target
# A background step's exit status goes to a file: with pid_max at 32768 the builds wrap
# the PIDs, and bash forgets a finished job whose PID a later child of its reuses, so
# `wait` alone can answer 127 for a step that succeeded.
in_background() {
  local status="$1"; shift
  rm -f "$status"
  ( rc=0; "$@" || rc=$?; echo "$rc" >"$status" ) &
}
# Waits for a background step (PID, status file) and returns its exit status.
wait_for() {
  wait "$1" 2>/dev/null || true
  [[ -s "$2" ]] || return 1
  return "$(<"$2")"
}
in_background target/lab-image.status tests/lab/build-image.sh >target/lab-image.log 2>&1
lab_image=$!
timed cargo fmt --all --check
timed cargo fmt --manifest-path fuzz/Cargo.toml --check
# The arm64 and armhf release binaries, their .debs and the arm64 root tests/cross.rs
# installs into: built in the background at idle CPU priority (SCHED_IDLE: they run only
# on a core nothing else wants, so they neither slow the steps below nor disturb a
# timing-sensitive test), on the cores the suite leaves idle while it waits on browsers,
# timers and the lab VM; tests/cross.rs runs once they are done (docs/architecture.md,
# "CI time").
cross_steps() {
  timed chrt --idle 0 cross/package.sh aarch64-unknown-linux-gnu >/dev/null &&
    timed chrt --idle 0 cross/package.sh armv7-unknown-linux-gnueabihf >/dev/null &&
    timed chrt --idle 0 cross/arm64-root.sh >/dev/null
}
in_background target/cross-steps.status cross_steps
cross_job=$!
# A step that fails ends the suite; the cross builds are not left running behind it.
kill_tree() {
  local child
  for child in $(pgrep -P "$1"); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
trap '[[ -s target/cross-steps.status ]] || kill_tree "$cross_job"' EXIT
# Clippy lints the workspace inside the test build instead of in a check build of its
# own: clippy-driver as cargo's workspace wrapper, which is what `cargo clippy` does,
# with the same `-D warnings`, but compiling for real, so the ~800 core-seconds of a
# separate check of every dependency are not spent. The wrapper goes by `--config`, not
# the environment, so that nothing the tests start inherits it (tests/cross.rs's release
# builds must not be linted into a different build); CLIPPY_ARGS is read only by
# clippy-driver. The same flags on every `cargo test` below keep the build fresh.
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
lint=(--config "build.rustc-workspace-wrapper=\"$(rustup which clippy-driver)\"")
timed cargo "${lint[@]}" test --workspace --all-targets --no-run
# Supply chain (deny.toml): licences, banned crates, sources. Advisories need the
# RustSec database from GitHub, which these machines cannot reach (deny.toml says more).
timed cargo deny --log-level error check licenses bans sources
# GStreamer's WHEP client (gst-plugins-rs whepsrc) for the WHEP test, built from crates.io.
timed scripts/whep-client.sh >/dev/null
# Every parser of remote input, fuzzed for 15 s each (scripts/fuzz.sh; the longer runs
# and their figures are in docs/reliability.md). Unoptimized (--dev): the instrumented
# release build of edgecam and all its dependencies took ~8 of CI's minutes, the dev
# build takes ~4; a smoke run catches a new crash in its first thousands of inputs,
# which the dev build still runs (25 000 to 377 000 per target in 15 s, in CI).
timed scripts/fuzz.sh --dev --seconds 15
# The instrumented builds (4.4 GB) serve no later step; a developer's stay warm.
if [[ -n "${CI:-}" ]]; then
  rm -rf fuzz/target
fi
# The programs the suite starts (brokers, coturn, edgecam, browsers, the lab VM): none
# may outlive it.
suite_procs() {
  ps -eo pid=,comm= | awk '$2 ~ /^(turnserver|mosquitto|edgecam|edgecam-bench|chromium|faketime|qemu-system-x86|gst-launch-1.0)$/ {print $1}' | sort
}
before="$(suite_procs)"
timed wait_for "$lab_image" target/lab-image.status || echo "test.sh: the lab image build failed (target/lab-image.log); tests/lab.rs tries again" >&2
# Integration tests start real processes and WebRTC stacks; two at a time suits 2 cores.
timed cargo "${lint[@]}" test --workspace --all-targets -- --test-threads=2 --skip raspberry_pi::
timed wait_for "$cross_job" target/cross-steps.status
timed cargo "${lint[@]}" test -p edgecam --test cross -- --test-threads=2
# Left over: started during the suite and still running 10 s after it ended.
for _ in $(seq 50); do
  left="$(comm -13 <(echo "$before") <(suite_procs))"
  [[ -z "$left" ]] && break
  sleep 0.2
done
if [[ -n "$left" ]]; then
  echo "test.sh: processes the suite started are still running:" >&2
  ps -o pid,ppid,args -p "$(echo "$left" | paste -sd,)" >&2 || true
  kill -KILL $left 2>/dev/null || true
  exit 1
fi
