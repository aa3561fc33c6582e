#!/usr/bin/env bash
# What the integrations cost (docs/performance.md, "Integrations"), on a release build
# with the 1280x720 30 fps test pattern, x264 at 2000 kbit/s and the test tone:
#   A. the snapshot branch while idle: the camera's own pipeline (gst-launch-1.0) with
#      and without its tee/valve/jpegenc branch, CPU and RSS over the window;
#   B. snapshots on request: GET /snapshot.jpg once a second, latency per request and
#      the CPU edgecam spends meanwhile, beside the same window idle;
#   C. Home Assistant discovery on (a JPEG and a telemetry message every 10 s) and off:
#      edgecam's CPU and RSS over the window, on a real Mosquitto;
#   D. two-way audio on ([audio] playback_device set; nobody talking, so no device is
#      opened) and off: edgecam's CPU and RSS over the window.
# Everything listens on loopback only. Usage:
#   crates/edgecam-bench/scripts/integrations-cost.sh [path/to/edgecam] [window s] [parts]
# parts: which of A B C D to run (default ABCD).
set -euo pipefail
bin="${1:-target/release/edgecam}"
window="${2:-60}"
parts="${3:-ABCD}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
tck="$(getconf CLK_TCK)"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# cpu <pid> <seconds>: % of one core the process used over the window.
cpu() {
  local a b
  a="$(ticks "$1")"; sleep "$2"; b="$(ticks "$1")"
  awk -v a="$a" -v b="$b" -v t="$tck" -v s="$2" 'BEGIN {printf "%.2f", (b - a) / t / s * 100}'
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mqtt_port="$(port)"
mosquitto -p "$mqtt_port" >"$work/mosquitto.log" 2>&1 & pids+=($!)
sleep 0.5
config() { # config <http port> <homeassistant: true|false> [audio line]
  cat <<TOML
[camera]
id = "bench"
[video]
source = "test"
width = 1280
height = 720
fps = 30
bitrate_kbps = 2000
[audio]
source = "test"
${3:-}
[signaling]
broker = "mqtt://127.0.0.1:$mqtt_port"
[http]
listen = "127.0.0.1:$1"
[access]
mode = "open"
[webrtc]
udp_bind = ["127.0.0.1"]
[homeassistant]
enabled = $2
TOML
}
start_camera() { # start_camera <http port> <homeassistant> [audio line] → pid
  config "$1" "$2" "${3:-}" >"$work/cam-$1.toml"
  RUST_LOG=info,edgecam::app::plan=debug "$bin" --config "$work/cam-$1.toml" >"$work/cam-$1.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/api/stats" 2>/dev/null && break
    sleep 0.1
  done
  sleep 3
  echo "$pid"
}

# A. The snapshot branch, idle.
if [[ "$parts" == *A* ]]; then
http="$(port)"
cam="$(start_camera "$http" false)"
launch="$(grep -o 'pipeline: .*' "$work/cam-$http.log" | head -1 | sed 's/^pipeline: //')"
kill "$cam"; wait "$cam" 2>/dev/null || true
without="$(python3 - "$launch" <<'PY'
import re, sys
s = sys.argv[1]
s = s.replace(" ! tee name=snapshot_tee", "")
s = re.sub(r"\s+snapshot_tee\. ! .*?appsink name=snapshot[^!]*?drop=true", "", s)
print(s)
PY
)"
measure_launch() { # measure_launch <description> → "cpu% rss"
  # shellcheck disable=SC2086
  eval "exec gst-launch-1.0 -q $1" >/dev/null 2>&1 & local pid=$!
  pids+=("$pid")
  sleep 3
  local c; c="$(cpu "$pid" "$window")"
  echo "$c $(rss_mib "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
read -r a_with a_with_rss <<<"$(measure_launch "$launch")"
read -r a_without a_without_rss <<<"$(measure_launch "$without")"
echo "A. pipeline idle, ${window} s: with the snapshot branch ${a_with} % of a core, ${a_with_rss} MiB; without ${a_without} %, ${a_without_rss} MiB"
fi

# B. Snapshots once a second.
if [[ "$parts" == *B* ]]; then
http="$(port)"
cam="$(start_camera "$http" false)"
idle="$(cpu "$cam" "$window")"
ticks_a="$(ticks "$cam")"
: >"$work/latency"
for _ in $(seq "$window"); do
  curl -fsS -o "$work/snap.jpg" -w '%{time_total}\n' "http://127.0.0.1:$http/snapshot.jpg" >>"$work/latency"
  sleep 0.9
done
ticks_b="$(ticks "$cam")"
busy="$(awk -v a="$ticks_a" -v b="$ticks_b" -v t="$tck" -v s="$window" 'BEGIN {printf "%.2f", (b - a) / t / s * 100}')"
lat="$(sort -n "$work/latency" | awk '{v[NR]=$1*1000} END {printf "p50 %.1f ms, p95 %.1f ms, max %.1f ms over %d", v[int(NR*0.5+0.5)], v[int(NR*0.95+0.5)], v[NR], NR}')"
echo "B. snapshots (1280x720, $(stat -c %s "$work/snap.jpg") bytes): $lat requests; edgecam ${idle} % of a core idle, ${busy} % with 1 snapshot/s"
kill "$cam"; wait "$cam" 2>/dev/null || true
fi

idle_camera() { # idle_camera <label> <homeassistant> [audio line]: CPU and RSS, no viewer
  local http cam c
  http="$(port)"
  cam="$(start_camera "$http" "$2" "${3:-}")"
  c="$(cpu "$cam" "$window")"
  echo "$1: edgecam ${c} % of a core, RSS $(rss_mib "$cam") MiB (${window} s, no viewer)"
  kill "$cam"; wait "$cam" 2>/dev/null || true
}

# C. Home Assistant off and on.
if [[ "$parts" == *C* ]]; then
  for ha in false true; do idle_camera "C. homeassistant.enabled = $ha" "$ha"; done
fi

# D. Two-way audio off and on.
if [[ "$parts" == *D* ]]; then
  idle_camera "D. playback_device unset" false
  idle_camera 'D. playback_device = "default"' false 'playback_device = "default"'
fi
