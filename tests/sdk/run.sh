#!/usr/bin/env bash
# Runs the tests that drive tandem with the official Dapr Python SDK.
# Uses the venv venv.sh makes (once) with the pinned SDK; needs the tandem binary built
# (TANDEM_BIN, default: the debug build in CARGO_TARGET_DIR or ./target).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/venv.sh")"
# The JS SDK, installed outside the clone from the pinned package.json.
js="${TANDEM_SDK_JS:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/sdk-js}"
if ! cmp -s "$here/js/package.json" "$js/package.json" || [ ! -d "$js/node_modules/@dapr/dapr" ]; then
  echo "sdk: installing the Dapr JS SDK into $js"
  mkdir -p "$js"
  cp "$here/js/package.json" "$js/package.json"
  (cd "$js" && npm install --no-audit --no-fund --loglevel=error)
fi
export NODE_PATH="$js/node_modules"

target="${CARGO_TARGET_DIR:-$here/../../target}"
export TANDEM_BIN="${TANDEM_BIN:-$target/debug/tandem}"
[ -x "$TANDEM_BIN" ] || { echo "sdk: no tandem binary at $TANDEM_BIN; run cargo build first" >&2; exit 1; }
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
