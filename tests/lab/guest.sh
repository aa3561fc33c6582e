#!/bin/sh
# Runs inside the device-lab VM as root under systemd (lab.service), with the 9p share
# at /lab: loads the kernel's test drivers, installs edgecam's .deb and exercises the
# service on each capture path. Writes evidence to /lab/out; the host test
# (tests/lab.rs) asserts on it. Every wait is bounded.
#
# Phases, each with a viewer decoding what it gets:
#   defaults  vivid (raw; 1280x720 only at 12.5 fps), the shipped config untouched
#   lab       vivid at 640x480@15 (lab config), a viewer talking through snd-aloop,
#             then stall → watchdog, reload,
#   hotplug   vivid unbound and bound again while a viewer watches,
#   shutdown  a viewer gets bye on systemctl stop
#   mjpeg     v4l2loopback fed MJPEG by a GStreamer producer, shipped config
#   h264      v4l2loopback fed H.264 byte-stream, shipped config (passthrough)
set -u
out=/lab/out
mkdir -p "$out"
exec >"$out/guest.log" 2>&1
set -x
now() { date +%s%6N; }               # realtime µs, as journald's __REALTIME_TIMESTAMP
mark() { echo "$1 $(now)" >> "$out/marks.txt"; }
wait_for() {                          # wait_for SECONDS COMMAND...: poll every 0.2 s
  limit=$(( $1 * 5 )); shift
  i=0; while [ $i -lt $limit ]; do "$@" && return 0; sleep 0.2; i=$((i + 1)); done
  return 1
}
viewer() {                            # viewer PHASE CAMERA: the webrtc-rs test viewer
  # The shipped config runs invite mode (camera id = host name): the viewer mints an
  # invitation from the secret the service generated.
  secret=""; [ "$2" = edgecam-lab ] && secret=/var/lib/edgecam/access-secret
  env EDGECAM_LAB_PHASE="$1" EDGECAM_LAB_OUT="$out/viewer-$1.json" EDGECAM_LAB_CAMERA="$2" \
    EDGECAM_LAB_BROKER_PORT=1883 ${secret:+"EDGECAM_LAB_SECRET=$secret"} \
    /lab/lab-viewer --ignored --exact in_guest_viewer --nocapture --test-threads=1 \
    > "$out/viewer-$1.log" 2>&1
}
cpu() {                               # cpu NAME: the service's CPU time over 10 s
  c0=$(systemctl show -p CPUUsageNSec --value edgecam); t0=$(now)
  sleep 10
  c1=$(systemctl show -p CPUUsageNSec --value edgecam); t1=$(now)
  echo "$1 $(( (c1 - c0) / 1000 )) $(( t1 - t0 ))" >> "$out/cpu.txt"   # name cpu_us wall_us
}
journal_has() { journalctl -u edgecam -o cat --since "@$(( $1 / 1000000 ))" | grep -q "$2"; }
started() {                           # started NAME: systemctl start, timed, then state
  mark "start_$1"
  systemctl start edgecam; echo "$?" > "$out/start-$1.rc"
  mark "started_$1"
  systemctl show edgecam > "$out/show-$1.txt"
}
stop_quietly() { systemctl stop edgecam; systemctl reset-failed edgecam 2>/dev/null; true; }

# Real kernel devices: a vivid webcam and an ALSA loopback card.
modprobe vivid n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0
modprobe snd-aloop
udevadm settle -t 10
# The lab config names the camera by its udev path: a re-bound vivid may come back
# under another /dev/video number, as a replugged USB camera may.
cam=/dev/v4l/by-path/platform-vivid.0-video-index0
v4l2-ctl -d "$cam" --all > "$out/v4l2-ctl.txt" 2>&1

# A tone played into both playback sides of the loopback: what edgecam captures on
# hw:Loopback,1,0 (lab config) and on ALSA's default device (shipped config).
for side in 0 1; do
  gst-launch-1.0 -q audiotestsrc is-live=true freq=440 ! audio/x-raw,rate=48000,channels=2 \
    ! alsasink device=hw:Loopback,$side,0 > "$out/tone-$side.log" 2>&1 &
done

# Install the package as a user would; nothing of it edited.
dpkg -i /lab/edgecam.deb > "$out/dpkg.log" 2>&1; echo "$?" > "$out/dpkg.rc"
cp /etc/edgecam/edgecam.toml /tmp/shipped.toml
/usr/bin/edgecam devices --json > "$out/devices.json" 2> "$out/devices.err"
edgecam --config /etc/edgecam/edgecam.toml --check-config > "$out/check-defaults.txt" 2>&1
echo "$?" >> "$out/check-defaults.txt"

# --- defaults: the shipped config on vivid, whose raw modes lack 720p30 ------------
started defaults
viewer defaults edgecam-lab
cpu defaults
stop_quietly

# --- watch / stall / reload / hotplug / shutdown on the lab config -------------------
install -m 0644 /lab/edgecam.toml /etc/edgecam/edgecam.toml
started lab
# The camera is streaming for the service: --check-config says who holds it.
edgecam --config /etc/edgecam/edgecam.toml --check-config > "$out/check-busy.txt" 2>&1
echo "$?" >> "$out/check-busy.txt"
viewer lab lab
cpu lab

# Talk-back: a viewer talks a 880 Hz tone; edgecam plays it on the loopback card's
# playback substream 1 (lab config: playback_device = "hw:Loopback,0,1"), recorded here
# on the capture side of the same substream. The recorder opens first, so the loopback
# runs at its format and edgecam's pipeline converts to it.
gst-launch-1.0 -q alsasrc device=hw:Loopback,1,1 ! audio/x-raw,format=S16LE,rate=48000,channels=1 \
  ! filesink location="$out/talk.raw" > "$out/talk-rec.log" 2>&1 &
recpid=$!
wait_for 20 test -s "$out/talk.raw"
mark talk
viewer talk lab
mark talked
sleep 1
kill "$recpid"; wait "$recpid"

# Stall: vivid drops every buffer, so no frame arrives although the stream is on.
# The supervisor restarts capture; after video.restart_limit failures edgecam stops
# petting the watchdog and systemd restarts it.
mark stall
v4l2-ctl -d "$cam" -c percentage_of_dropped_buffers=100
wait_for 90 sh -c '[ "$(systemctl show -p NRestarts --value edgecam)" -ge 1 ]'
mark restarted_by_systemd
v4l2-ctl -d "$cam" -c percentage_of_dropped_buffers=0
mark unstalled
wait_for 60 systemctl is-active -q edgecam
mark active_again
systemctl show edgecam > "$out/show-recovered.txt"

# Reload: a broken config is refused (still active, same process), a valid one applied.
pid_before=$(systemctl show -p MainPID --value edgecam)
cp /etc/edgecam/edgecam.toml /tmp/good.toml
echo 'fps = "fast"' >> /etc/edgecam/edgecam.toml
mark reload_bad
systemctl reload edgecam; echo "$?" > "$out/reload-bad.rc"
sleep 1
cp /tmp/good.toml /etc/edgecam/edgecam.toml
readies=$(journalctl -u edgecam -o cat | grep -c 'ready: first encoded frame')
mark reload
systemctl reload edgecam; echo "$?" > "$out/reload.rc"
wait_for 60 sh -c "[ \$(journalctl -u edgecam -o cat | grep -c 'ready: first encoded frame') -gt $readies ]"
mark reloaded
[ "$(systemctl show -p MainPID --value edgecam)" = "$pid_before" ] && echo same > "$out/reload-pid.txt" || echo changed > "$out/reload-pid.txt"

# Hot-plug: the camera's driver unbound (its node disappears) while a viewer watches,
# then bound again.
viewer hotplug lab &
vpid=$!
wait_for 60 test -e "$out/viewer-hotplug.json.playing"
mark unplug
echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind
wait_for 30 journal_has "$(sed -n 's/^unplug //p' "$out/marks.txt")" "is gone"
# 7 s of stand-in: under TCG its pipeline took 4 s to send a first frame and then
# ran at ~3 fps, so 4 s left the viewer 9 frames of it.
sleep 7
systemctl show edgecam > "$out/show-unplugged.txt"
mark replug
echo vivid.0 > /sys/bus/platform/drivers/vivid/bind
wait_for 30 journal_has "$(sed -n 's/^replug //p' "$out/marks.txt")" "is back"
sleep 5
touch "$out/hotplug.done"
wait "$vpid"
systemctl show edgecam > "$out/show-replugged.txt"

# Graceful stop with a viewer watching: it must get bye "shutdown".
viewer shutdown lab &
vpid=$!
wait_for 60 test -e "$out/viewer-shutdown.json.playing"
mark stop
systemctl stop edgecam; echo "$?" > "$out/stop.rc"
mark stopped
wait "$vpid"
systemctl show edgecam > "$out/show-stopped.txt"
# The pipeline released the camera: nothing holds a /dev/video* node.
ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c '/dev/video' > "$out/video0-holders.txt"

# --- v4l2loopback: MJPEG, then H.264, each from a GStreamer producer ----------------
# exclusive_caps: the node is a capture device once a producer writes, as a UVC camera
# is; edgecam runs on the shipped config (source and format "auto").
modprobe -r vivid
cp /tmp/shipped.toml /etc/edgecam/edgecam.toml
producer() {                          # producer NAME ENCODE...: feed /dev/video0
  name=$1; shift
  modprobe v4l2loopback devices=1 video_nr=0 exclusive_caps=1 card_label="lab loopback"
  udevadm settle -t 10
  gst-launch-1.0 -q videotestsrc is-live=true pattern=ball \
    ! video/x-raw,width=640,height=480,framerate=15/1 ! "$@" \
    ! v4l2sink device=/dev/video0 sync=false > "$out/producer-$name.log" 2>&1 &
  ppid=$!
  wait_for 30 sh -c "v4l2-ctl -d /dev/video0 --list-formats-ext | grep -q Interval"
  v4l2-ctl -d /dev/video0 --all --list-formats-ext > "$out/v4l2-ctl-$name.txt" 2>&1
}
producer_stop() {
  kill "$ppid"; wait "$ppid"
  modprobe -r v4l2loopback
}

# v4l2sink takes parsed JPEG in the colorimetry v4l2loopback announces (sRGB-ish
# 2:4:7:1); jpegenc's bt601 alone is refused as not-negotiated.
producer mjpeg jpegenc quality=85 ! jpegparse ! "image/jpeg,colorimetry=(string)2:4:7:1"
started mjpeg
viewer mjpeg edgecam-lab
cpu mjpeg
stop_quietly
producer_stop

# A short GOP (5 frames: the producer's x264 makes 4-15 fps under TCG) keeps
# passthrough. (The switch to re-encoding for a camera with a long GOP is tested on
# the host, deterministically: here whether a request waits 4 s would depend on where
# in the producer's GOP the viewer happens to join.)
gop() {
  echo x264enc tune=zerolatency speed-preset=ultrafast key-int-max="$1" bitrate=800 \
    ! video/x-h264,profile=constrained-baseline ! h264parse \
    ! video/x-h264,stream-format=byte-stream,alignment=au
}
# shellcheck disable=SC2046 # the pipeline is meant to split into words
producer h264 $(gop 5)
started h264
viewer h264 edgecam-lab
cpu h264
stop_quietly
producer_stop

journalctl -u edgecam -o json --no-pager > "$out/journal.json"
journalctl -b --no-pager > "$out/journal-all.txt"
mark done
