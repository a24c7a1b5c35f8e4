#!/usr/bin/env bash
# Makes (once) the venv with the pinned Dapr Python SDK (and grpcio, which
# the transparent-mode tests use as a plain gRPC app) and prints its path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TANDEM_SDK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/sdk-venv}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
  echo "sdk: creating $venv with $(tr '\n' ' ' < "$here/requirements.txt")" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
echo "$venv"
