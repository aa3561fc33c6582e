//! Sound for the two-way audio tests: a test-owned PulseAudio server with a null sink
//! (a timed, software sound card on a machine without one; edgecam reaches it through
//! ALSA's `pulse` PCM), a recorder of what that sink plays, tone files for Chromium's
//! fake microphone, and a frequency estimate for the recorded tone.
//!
//! A PulseAudio server rather than ALSA's `file` PCM on `null`: `null` takes samples as
//! fast as they come, so a player's ring buffer spins and writes gigabytes of silence.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sample rate of the null sink and of recordings, Hz.
pub const RATE: u32 = 48_000;

/// A PulseAudio server of this test with one mono null sink, `talk`; stopped on drop.
pub struct Pulse {
    child: Child,
    dir: tempfile::TempDir,
}

impl Pulse {
    /// Starts the server on a socket in a fresh directory and waits (≤ 10 s) for it.
    ///
    /// # Errors
    /// When `pulseaudio` is missing or does not come up.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("native");
        let child = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disable-shm=yes",
            ])
            .args([
                "--use-pid-file=no",
                "--log-target=stderr",
                "--log-level=error",
            ])
            .args([
                "-L",
                &format!("module-null-sink sink_name=talk rate={RATE} channels=1"),
            ])
            .args([
                "-L",
                &format!(
                    "module-native-protocol-unix auth-anonymous=1 socket={}",
                    socket.display()
                ),
            ])
            // Its own home and runtime directory: nothing of the machine's is touched.
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start pulseaudio (scripts/setup.sh --test installs it)")?;
        let pulse = Self { child, dir };
        let until = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > until {
                bail!("pulseaudio did not create {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pulse)
    }

    /// `PULSE_SERVER` for clients (edgecam's ALSA `pulse` PCM, the recorder).
    pub fn server(&self) -> String {
        format!("unix:{}", self.dir.path().join("native").display())
    }

    /// Records what the `talk` sink plays (its monitor), as mono S16LE at [`RATE`], until
    /// the returned recorder is stopped. Returns once the recording runs (the monitor
    /// delivers silence while nothing plays): `parec` took about 1.4 s to start here.
    ///
    /// # Errors
    /// When `parec` does not start or records nothing within 10 s.
    pub fn record(&self) -> anyhow::Result<Recording> {
        let path = self.dir.path().join(format!("rec-{}.raw", rand_suffix()));
        let file = std::fs::File::create(&path)?;
        let child = Command::new("parec")
            .args(["-d", "talk.monitor", "--format=s16le", "--channels=1"])
            // Small fragments: what was recorded is on disk when the recorder stops.
            .arg("--latency-msec=20")
            .arg(format!("--rate={RATE}"))
            .env("PULSE_SERVER", self.server())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("start parec")?;
        let recording = Recording { child, path };
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&recording.path).map_or(0, |m| m.len()) < u64::from(RATE / 50) {
            if Instant::now() > until {
                bail!("parec recorded nothing in 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(recording)
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A running recording of the null sink.
pub struct Recording {
    child: Child,
    path: PathBuf,
}

impl Recording {
    /// Stops recording and returns the samples.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn stop(mut self) -> anyhow::Result<Vec<i16>> {
        // SIGTERM, so that parec writes out what it holds.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait()?.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        read_s16le(&self.path)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a headerless mono S16LE file.
///
/// # Errors
/// When the file cannot be read.
pub fn read_s16le(path: &Path) -> anyhow::Result<Vec<i16>> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Beeps of a sine tone at `hz`, half scale, mono at [`RATE`], for `seconds`: 300 ms
/// on, 200 ms off. Beeps rather than a steady tone, because a browser's noise
/// suppression takes a steady tone for noise and removes it within half a second.
pub fn beeps(hz: u32, seconds: u32) -> Vec<i16> {
    (0..seconds * RATE)
        .map(|i| {
            if (i % (RATE / 2)) >= RATE * 3 / 10 {
                return 0;
            }
            let t = f64::from(i) / f64::from(RATE);
            (16_000.0 * (2.0 * std::f64::consts::PI * f64::from(hz) * t).sin()) as i16
        })
        .collect()
}

/// Writes [`beeps`] as a WAV file (RIFF, PCM S16LE mono at [`RATE`]), for Chromium's
/// fake microphone (`--use-file-for-fake-audio-capture`).
///
/// # Errors
/// When the file cannot be written.
pub fn write_beeps_wav(path: &Path, hz: u32, seconds: u32) -> anyhow::Result<()> {
    let data: Vec<u8> = beeps(hz, seconds)
        .into_iter()
        .flat_map(i16::to_le_bytes)
        .collect();
    let len = u32::try_from(data.len())?;
    let mut wav = Vec::with_capacity(data.len() + 44);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // channels
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&len.to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).with_context(|| format!("write {}", path.display()))
}

/// What a recording holds: how long it sounded and at what pitch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Time with sound (10 ms windows above the threshold), ms.
    pub sounding_ms: u32,
    /// Frequency, Hz, from the typical spacing of zero crossings inside sounding
    /// windows (so beep edges, silences and holes do not count); 0 without a tone.
    pub hz: f64,
}

/// Estimates the pitch of a tone in `samples` (mono, `rate` Hz). A 10 ms window sounds
/// when its RMS is above 1 % of full scale. The pitch comes from the gaps between
/// consecutive zero crossings inside sounding windows: their median `m` picks the
/// tone's half-period, and the mean of the gaps within ±25 % of `m` refines it.
/// Gaps, not crossing counts, because audio that arrives in bursts (a loaded
/// device-lab VM) has holes of silence or concealment inside sounding windows; a hole
/// makes one long gap, left out, where it would lower a count of crossings.
pub fn measure_tone(samples: &[i16], rate: u32) -> Tone {
    let window = (rate / 100) as usize;
    let active: Vec<bool> = samples
        .chunks_exact(window)
        .map(|w| {
            let energy: f64 = w.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (energy / w.len() as f64).sqrt() >= 0.01 * f64::from(i16::MAX)
        })
        .collect();
    let windows = u32::try_from(active.iter().filter(|&&a| a).count()).unwrap_or(u32::MAX);
    let mut gaps = Vec::new();
    let mut last: Option<usize> = None;
    for (i, pair) in samples.windows(2).enumerate() {
        if !active.get(i / window).copied().unwrap_or(false) {
            last = None;
            continue;
        }
        if (pair[0] < 0) != (pair[1] < 0) {
            if let Some(previous) = last {
                gaps.push(i - previous);
            }
            last = Some(i);
        }
    }
    gaps.sort_unstable();
    let hz = gaps.get(gaps.len() / 2).map_or(0.0, |&median| {
        let near: Vec<f64> = gaps
            .iter()
            .filter(|&&g| g * 4 >= median * 3 && g * 4 <= median * 5)
            .map(|&g| g as f64)
            .collect();
        let mean = near.iter().sum::<f64>() / near.len() as f64;
        f64::from(rate) / (2.0 * mean)
    });
    Tone {
        sounding_ms: windows * 10,
        hz,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, ms: u32, amplitude: f64) -> Vec<i16> {
        (0..(RATE * ms / 1000))
            .map(|i| {
                let t = f64::from(i) / f64::from(RATE);
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn measures_a_tone_between_silences() {
        let mut s = vec![0i16; 48_000];
        s.extend(sine(660.0, 1000, 8000.0));
        s.extend(vec![3i16; 24_000]);
        let tone = measure_tone(&s, RATE);
        assert!((tone.hz - 660.0).abs() <= 10.0, "{tone:?}");
        assert!((990..=1000).contains(&tone.sounding_ms), "{tone:?}");
        assert_eq!(measure_tone(&vec![0i16; 48_000], RATE).sounding_ms, 0);
    }

    /// A device-lab run played an 880 Hz tone with holes inside sounding windows;
    /// counting crossings per 50 ms block made it 720 Hz. 9 ms holes every 50 ms leave
    /// every 10 ms window sounding and would give that count 880 × 41 / 50 ≈ 722 Hz.
    #[test]
    fn holes_inside_a_tone_do_not_lower_its_pitch() {
        let mut s = Vec::new();
        for _ in 0..40 {
            s.extend(sine(880.0, 41, 8000.0));
            s.extend(vec![0i16; 9 * 48]);
        }
        let tone = measure_tone(&s, RATE);
        assert!((tone.hz - 880.0).abs() <= 10.0, "{tone:?}");
        let mut wobble = sine(440.0, 500, 8000.0);
        wobble.extend(sine(880.0, 100, 8000.0));
        assert!((measure_tone(&wobble, RATE).hz - 440.0).abs() <= 10.0);
    }
}
