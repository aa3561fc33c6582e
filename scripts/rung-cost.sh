#!/usr/bin/env bash
# What an extra rung of the ladder costs: CPU of the capture pipeline (720p30 test
# pattern, the main x264 rung as edgecam builds it) alone, with the low H.264 rung
# (640x360, 500 kbit/s) and with the VP8 rung (640x360, 500 kbit/s) running, each
# measured over a window after a settling second.
#
# usage: scripts/rung-cost.sh [seconds]   (default 15; prints a markdown table)
set -euo pipefail
secs="${1:-15}"
hz=$(getconf CLK_TCK)

src="videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! video/x-raw,width=1280,height=720,framerate=30/1 ! tee name=t"
main="t. ! queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream ! videoconvert ! video/x-raw,format=I420 \
 ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000 key-int-max=60 bframes=0 b-adapt=false byte-stream=true \
 ! video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 ! fakesink sync=false"
scale="t. ! queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream ! videoscale ! videoconvert ! video/x-raw,width=640,height=360,format=I420"
low="$scale ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max=60 bframes=0 b-adapt=false byte-stream=true threads=1 \
 ! video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 ! fakesink sync=false"
vp8="$scale ! vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=500000 keyframe-max-dist=60 lag-in-frames=0 \
 error-resilient=default threads=1 ! fakesink sync=false"

cpu_of() { # pid -> utime+stime ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

measure() { # description -> CPU % of one core
  # shellcheck disable=SC2086
  gst-launch-1.0 -q $1 >/dev/null 2>&1 &
  local pid=$!
  sleep 1
  local a; a=$(cpu_of "$pid")
  sleep "$secs"
  local b; b=$(cpu_of "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v d=$((b - a)) -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.1f", 100 * d / hz / s }'
}

base=$(measure "$src $main")
with_low=$(measure "$src $main $low")
with_vp8=$(measure "$src $main $vp8")
echo "| pipeline (720p30 test pattern, ${secs} s) | CPU % of one core | the rung's share |"
echo "|---|---:|---:|"
echo "| main x264 rung alone | $base | – |"
echo "| + low H.264 rung (640x360, 500 kbit/s) | $with_low | $(awk -v a="$with_low" -v b="$base" 'BEGIN{printf "%.1f", a-b}') |"
echo "| + VP8 rung (640x360, 500 kbit/s) | $with_vp8 | $(awk -v a="$with_vp8" -v b="$base" 'BEGIN{printf "%.1f", a-b}') |"
