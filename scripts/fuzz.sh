#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time each (default 60 s):
#   scripts/fuzz.sh [seconds] [target…]
# Installs what it needs: the nightly toolchain (cargo fuzz's sanitizer
# flags need it) and cargo-fuzz. A crash leaves its input under
# fuzz/artifacts/<target>/ and stops the script; each target's corpus
# grows in fuzz/corpus/<target>/ (not committed), starting from the seeds
# committed in fuzz/seeds/<target>/.
# Prints, per target, the executions, the coverage (libFuzzer's `cov`
# edges and `ft` features) and the corpus size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(path acl resources cloudevent detect schedule)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# The fuzz build keeps its own target dir (sanitizer flags differ).
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}-fuzz}"

summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log="$(mktemp)"
  echo "==> fuzz $t for ${seconds}s"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  last="$(grep -E '^#[0-9]+' "$log" | tail -1)"
  cov="$(echo "$last" | grep -o 'cov: [0-9]*' || true)"
  ft="$(echo "$last" | grep -o 'ft: [0-9]*' || true)"
  corpus="$(find "corpus/$t" -type f | wc -l)"
  summary+=("$t: $runs executions, $cov, $ft, corpus $corpus inputs")
  rm -f "$log"
done
printf '\n%s\n' "${summary[@]}"
