#!/usr/bin/env bash
# Runs a command inside the environment that scripts/setup.sh made (venv + built messages).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# colcon's setup scripts read unset variables: source them without `set -u`.
set +u
# shellcheck disable=SC1091
source "$ROOT/env.sh"
set -u
cd "$ROOT"
exec "$@"
