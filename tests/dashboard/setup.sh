#!/usr/bin/env bash
# Makes (once) what the dashboard's browser test needs: Debian's Chromium
# and playwright-core from the npm registry (Playwright's own browser
# download does not work here; it drives /usr/bin/chromium instead).
# Prints the node_modules directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${TANDEM_PLAYWRIGHT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/dashboard-node}"
if ! command -v chromium > /dev/null; then
  echo "dashboard: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y --no-install-recommends chromium || { apt-get update && apt-get install -y --no-install-recommends chromium; }; } >&2
fi
if ! cmp -s "$here/package.json" "$dir/package.json" || [ ! -d "$dir/node_modules/playwright-core" ]; then
  echo "dashboard: installing playwright-core into $dir" >&2
  mkdir -p "$dir"
  cp "$here/package.json" "$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) >&2
fi
echo "$dir/node_modules"
