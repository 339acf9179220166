#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) on its
# committed corpus, FUZZ_JOBS (default 2) targets at a time, and fails if any
# target crashes, times out or runs out of memory; the input that did it is
# left in fuzz/artifacts/<target>/. New corpus entries go to a temporary
# directory, so the work tree stays clean. See fuzz/README.md.
#
#   FUZZ_SECONDS=3600 scripts/fuzz.sh        # the longer run
#   FUZZ_TARGETS="classify scram" scripts/fuzz.sh
#   FUZZ_SECONDS=0 scripts/fuzz.sh           # skip
#
# Needs the nightly toolchain (cargo-fuzz is installed if missing); without
# it the run is skipped with a message. Builds go to FUZZ_TARGET_DIR
# (default: a cache outside the work tree, so repeated runs and fresh
# clones on the same machine only rebuild what changed).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pgsplit/fuzz-target}

if [ "$seconds" = 0 ]; then
  echo "fuzz.sh: skipped (FUZZ_SECONDS=0)"
  exit 0
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: SKIPPED: cargo fuzz needs the nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

build_opts=(--sanitizer "$sanitizer" --target-dir "$target_dir")
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
started=$SECONDS
echo "fuzz.sh: building the fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build "${build_opts[@]}"
built=$SECONDS
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

run_target() {
  local target=$1
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  local status=0
  "$bin_dir/$target" "$work/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$work/$target.log" 2>&1 || status=$?
  echo "$status" >"$work/$target.rc"
}

echo "fuzz.sh: fuzzing $(echo $targets) for ${seconds}s each, $jobs at a time"
running=0
for target in $targets; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$target" &
  running=$((running + 1))
done
wait

failed=()
for target in $targets; do
  log=$work/$target.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  found=$(find "$work/$target" -type f | wc -l)
  printf 'fuzz.sh: %-16s %5ss %10s execs  cov %6s  %4d new inputs\n' \
    "$target" "${secs:-?}" "${execs:-?}" "${cov:-?}" "$found"
  if [ "$(cat "$work/$target.rc")" != 0 ]; then
    failed+=("$target")
    echo "---- $target failed; last lines of its log:"
    tail -n 60 "$log"
    echo "---- the input is in fuzz/artifacts/$target/:"
    ls -l "fuzz/artifacts/$target/"
  fi
done
echo "fuzz.sh: build $((built - started))s, fuzzing $((SECONDS - built))s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (reproduce: cargo +nightly fuzz run -s $sanitizer <target> fuzz/artifacts/<target>/<file>)"
  exit 1
fi
echo "fuzz.sh: all targets passed"
