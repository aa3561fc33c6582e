#!/usr/bin/env bash
# Fuzzes every parser of remote input (fuzz/fuzz_targets, docs/reliability.md) with
# cargo-fuzz (libFuzzer, coverage-guided) on the stable toolchain: `--sanitizer none`,
# the one mode stable rustc supports (no AddressSanitizer; Rust's own bounds checks and
# debug assertions still turn memory errors into crashes).
#
#   scripts/fuzz.sh                 # 20 s per target (the test suite's run)
#   scripts/fuzz.sh --seconds 300   # longer
#   scripts/fuzz.sh --runs 1000000  # a fixed number of executions per target
#   scripts/fuzz.sh --runs 1000000 offer h264   # some targets only
#   scripts/fuzz.sh --dev --seconds 15          # unoptimized: builds in about half the
#                                               # time, runs ~15x fewer inputs (CI's smoke)
#
# New inputs go to target/fuzz-corpus/<target> (the seeds in fuzz/corpus stay as they
# are); a crash is written to fuzz/artifacts/<target>/ and fails the script. Each
# target's executions and coverage are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
limit=(-max_total_time=20)
mode=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    --dev) mode=(--dev); shift ;;
    *) break ;;
  esac
done
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
# Debug assertions on (-a): overflow checks and debug_assert! become crashes too.
fuzz=(cargo fuzz run --fuzz-dir fuzz --sanitizer none --debug-assertions "${mode[@]}")
summary=()
for t in "${targets[@]}"; do
  work="target/fuzz-corpus/$t"
  mkdir -p "$work" "fuzz/artifacts/$t"
  log="target/fuzz-corpus/$t.log"
  # 70 000 bytes: a little over the contract's 64 KiB payload limit.
  if ! "${fuzz[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
      "${limit[@]}" -max_len=70000 -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz.sh: $t failed; the input is in fuzz/artifacts/$t/. Last lines:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  runs="$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo '?')"
  secs="$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' || echo '?')"
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo '?')"
  summary+=("$(printf '%-10s %10s runs in %4s s, coverage %s edges, 0 crashes' "$t" "$runs" "$secs" "$cov")")
done
printf 'fuzz.sh: %s\n' "${summary[@]}"
