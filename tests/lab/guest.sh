#!/bin/sh
# Runs inside the device-lab VM as root under systemd (lab.service), with the 9p share
# at /lab: loads the kernel's test drivers, installs edgecam as the hardened service and
# exercises it. Writes evidence to /lab/out; the host test (tests/lab.rs) asserts on it.
# Every wait is bounded.
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
viewer() {                            # viewer PHASE: the webrtc-rs test viewer
  EDGECAM_LAB_PHASE="$1" EDGECAM_LAB_OUT="$out/viewer-$1.json" EDGECAM_LAB_CAMERA=lab \
    EDGECAM_LAB_BROKER_PORT=1883 \
    /lab/lab-viewer --ignored --exact in_guest_viewer --nocapture --test-threads=1 \
    > "$out/viewer-$1.log" 2>&1
}

# Real kernel devices: a vivid webcam and an ALSA loopback card.
modprobe vivid n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0
modprobe snd-aloop
udevadm settle -t 10
v4l2-ctl -d /dev/video0 --all > "$out/v4l2-ctl.txt" 2>&1
/lab/edgecam devices --json > "$out/devices.json" 2> "$out/devices.err"

# A tone played into the loopback's playback side is what edgecam captures.
gst-launch-1.0 -q audiotestsrc is-live=true freq=440 ! audio/x-raw,rate=48000,channels=2 \
  ! alsasink device=hw:Loopback,0,0 > "$out/tone.log" 2>&1 &

# Install as a package would.
install -m 0755 /lab/edgecam /usr/bin/edgecam
install -m 0644 /lab/edgecam.service /etc/systemd/system/edgecam.service
install -d /etc/edgecam && install -m 0644 /lab/edgecam.toml /etc/edgecam/edgecam.toml
systemctl daemon-reload

# Start: systemctl returns once edgecam sent READY=1 (Type=notify).
mark start
systemctl start edgecam; echo "$?" > "$out/start.rc"
mark started
systemctl show edgecam > "$out/show-started.txt"

# A viewer decodes video from /dev/video0 and audio from the loopback.
viewer watch

# Stall: vivid drops every buffer, so no frame arrives although the stream is on.
# The supervisor restarts capture; after video.restart_limit failures edgecam stops
# petting the watchdog and systemd restarts it.
mark stall
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=100
wait_for 90 sh -c '[ "$(systemctl show -p NRestarts --value edgecam)" -ge 1 ]'
mark restarted_by_systemd
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=0
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

# Graceful stop with a viewer watching: it must get bye "shutdown".
viewer shutdown &
vpid=$!
wait_for 60 test -e "$out/viewer-shutdown.json.playing"
mark stop
systemctl stop edgecam; echo "$?" > "$out/stop.rc"
mark stopped
wait "$vpid"
systemctl show edgecam > "$out/show-stopped.txt"
# The pipeline released the camera: nothing holds /dev/video0.
ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c '/dev/video0' > "$out/video0-holders.txt"

journalctl -u edgecam -o json --no-pager > "$out/journal.json"
journalctl -b --no-pager > "$out/journal-all.txt"
mark done
