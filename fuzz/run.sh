#!/usr/bin/env bash
# Runs one fuzz target for a bounded time: first over every regression input (each must pass),
# then from fresh seeds for EMBER_FUZZ_SECONDS (default 30). Meson's fuzz tests call it; by
# hand:  fuzz/run.sh build-fuzz/fuzz/fuzz_ember_payload build-fuzz/fuzz/make_corpus \
#            ember_payload tests/data/regressions
# A finding is saved as WORK/crash-* (WORK is printed) and fails the run.
set -euo pipefail

fuzzer=$1 make_corpus=$2 target=$3 regressions=$4
seconds=${EMBER_FUZZ_SECONDS:-30}
work=${EMBER_FUZZ_WORK:-$(dirname "$fuzzer")/fuzz-work}/$target
# Sanitizer stacks need llvm-symbolizer, which Debian keeps in LLVM's own folder (package
# llvm-16; without it stacks show addresses only, and findings are saved all the same).
symbolizer=$(ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$symbolizer" ]; then export PATH="$PATH:$(dirname "$symbolizer")"; fi
export UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
rm -rf "$work"
mkdir -p "$work/corpus" "$work/seeds"
"$make_corpus" "$target" "$work/seeds"

# Every byte string any target ever failed on must now pass every target.
mapfile -t old < <(find "$regressions" -type f ! -name '*.md' | sort)
if ((${#old[@]})); then
    "$fuzzer" -rss_limit_mb=2048 -malloc_limit_mb=512 "${old[@]}"
fi

echo "fuzzing $target for ${seconds}s; findings go to $work/"
"$fuzzer" "$work/corpus" "$work/seeds" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/"
