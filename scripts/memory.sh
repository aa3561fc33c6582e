#!/usr/bin/env bash
# edgecam's memory at 0 viewers and at each given number of viewers: the bench's camera
# (1280x720 30 fps test pattern, x264 2000 kbit/s, Opus) signaling through a Mosquitto
# on a free loopback port, `edgecam-bench load` viewers joining, and the resident set
# split into anonymous and file-backed memory (/proc/<pid>/smaps_rollup) after
# --settle seconds. With --heaptrack, edgecam runs under heaptrack and the recording's
# path is printed at the end (heaptrack_print it).
#
# usage: scripts/memory.sh [--edgecam BIN] [--bench BIN] [--settle S] [--heaptrack] [N ...]
#        e.g. scripts/memory.sh 1 10     (release binaries from target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
edgecam=target/release/edgecam bench=target/release/edgecam-bench settle=20 heap=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --edgecam) edgecam="$2"; shift 2 ;;
    --bench) bench="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --heaptrack) heap=1; shift ;;
    *) break ;;
  esac
done
dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mosquitto -p "$port" >"$dir/mosquitto.log" 2>&1 &
pids+=($!)
cat >"$dir/camera.toml" <<TOML
[camera]
id = "bench"
[video]
source = "test"
width = 1280
height = 720
fps = 30
bitrate_kbps = 2000
keyframe_interval_ms = 2000
[audio]
source = "test"
[access]
mode = "open"
[signaling]
broker = "mqtt://127.0.0.1:$port"
[http]
enabled = false
[webrtc]
udp_bind = ["127.0.0.1"]
max_viewers = 200
TOML
sleep 0.5
if [[ "$heap" == 1 ]]; then
  heaptrack -o "$dir/heaptrack" "$edgecam" --config "$dir/camera.toml" >"$dir/edgecam.log" 2>&1 &
  pids+=($!)
  pid=""
  for _ in $(seq 50); do
    pid="$(pgrep -n -f -- "--config $dir/camera.toml" || true)"
    [[ -n "$pid" && "$(readlink "/proc/$pid/exe")" == "$(realpath "$edgecam")" ]] && break
    sleep 0.1
  done
else
  "$edgecam" --config "$dir/camera.toml" >"$dir/edgecam.log" 2>&1 &
  pid=$!
  pids+=("$pid")
fi
rollup() {
  awk '/^Rss:|^Anonymous:/ {printf "%s %.1f MiB  ", $1, $2 / 1024} END {print ""}' "/proc/$pid/smaps_rollup"
}
sleep "$settle"
echo "0 viewers: $(rollup)"
for n in "$@"; do
  # The load process holds its viewers until its stdin closes.
  "$bench" load --broker-port "$port" --viewers "$n" < <(sleep $((settle + 5))) >"$dir/load-$n.log" 2>&1 &
  load=$!
  sleep "$settle"
  echo "$n viewers: $(rollup)"
  wait "$load" || true
  sleep 3
done
kill -INT "$pid" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
echo "work directory: $dir"
