#!/usr/bin/env bash
# Runs a command inside the environment that scripts/setup.sh made (venv + built messages).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/env.sh"
cd "$ROOT"
exec "$@"
