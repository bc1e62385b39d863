#!/usr/bin/env bash
# Fuzz smoke test for CI: builds every cargo-fuzz target, replays the committed corpora and the kept crash
# inputs (fuzz/regressions/<target>/), then fuzzes each target for a fixed number of executions.
# Exits non-zero on any crash, and ends with the line `fuzz: N passed, M failed`.
#
# Environment:
#   FUZZ_RUNS_SCALE  multiply every target's execution count (default 1; e.g. 10 for a longer smoke run)
#   FUZZ_SEED        libFuzzer seed (default 1, so a CI run is reproducible; 0 = random)
#   FUZZ_SANITIZER   cargo-fuzz sanitizer (default none: the core forbids unsafe code, and the smoke run
#                    must fit in about 3 minutes with the build; long runs use `address`, see README.md)
#   CARGO_BUILD_JOBS build parallelism (cargo's default: every core)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# The fuzz build needs nightly-only flags (-Zsanitizer, sancov); the pinned stable toolchain allows them
# for this build only.
export RUSTC_BOOTSTRAP=1

# Executions per target: a few seconds to 15 s each on 2 busy cores (see README.md).
declare -A RUNS=(
  [handshake]=1500000
  [login_start]=2000000
  [session]=300000
  [config]=150000
  [labels]=150000
)
TARGETS=(handshake login_start session config labels)
scale="${FUZZ_RUNS_SCALE:-1}"
seed="${FUZZ_SEED:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
echo "fuzz: building ${TARGETS[*]} (sanitizer: $sanitizer)"
nice -n 19 cargo fuzz build --sanitizer "$sanitizer"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="target/$triple/release"
echo "fuzz: built in $(($(date +%s) - start)) s"

logs="target/ci-logs"
rm -rf "$logs" target/ci-corpus
mkdir -p "$logs"

passed=0
failed=0
for t in "${TARGETS[@]}"; do
  t0=$(date +%s)
  bin="$bin_dir/$t"
  log="$logs/$t.log"
  mkdir -p "artifacts/$t" "target/ci-corpus/$t"
  common=(-artifact_prefix="artifacts/$t/" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  # Dictionaries of keys, hosts and markers; lengths that reach past each parser's frame limit.
  extra=()
  case "$t" in
    config) extra=(-dict=dict/config.dict) ;;
    labels) extra=(-dict=dict/labels.dict) ;;
    handshake) extra=(-dict=dict/handshake.dict -max_len=17000) ;;
    login_start) extra=(-max_len=8400) ;;
    session) extra=(-dict=dict/handshake.dict) ;;
  esac
  ok=1

  # 1. Every kept crash input, one by one.
  shopt -s nullglob
  regressions=("regressions/$t"/*)
  shopt -u nullglob
  if ((${#regressions[@]})); then
    if ! nice -n 19 "$bin" "${common[@]}" "${regressions[@]}" >"$log" 2>&1; then
      ok=0
    fi
  fi

  # 2. The committed corpus, then 3. fuzzing from it; new inputs go to a scratch directory, so the
  # committed corpus is not modified (libFuzzer runs every corpus input before mutating).
  if ((ok)); then
    runs=$((RUNS[$t] * scale))
    if ! nice -n 19 "$bin" "${common[@]}" "${extra[@]}" -seed="$seed" -runs="$runs" \
      "target/ci-corpus/$t" "corpus/$t" >>"$log" 2>&1; then
      ok=0
    fi
  fi

  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  secs=$(($(date +%s) - t0))
  if ((ok)); then
    passed=$((passed + 1))
    echo "fuzz: $t ok (${execs:-0} executions, corpus $(ls "corpus/$t" | wc -l) committed, ${secs} s)"
  else
    failed=$((failed + 1))
    echo "fuzz: $t FAILED (${secs} s); last lines of $log:"
    grep -v '^#[0-9]' "$log" | tail -n 60
    echo "fuzz: crash inputs: $(ls "artifacts/$t" 2>/dev/null | tr '\n' ' ')"
  fi
done

echo "fuzz: total $(($(date +%s) - start)) s"
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
