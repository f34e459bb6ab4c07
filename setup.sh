#!/usr/bin/env bash
# Set up lavid on a fresh Debian machine: system libraries for headless MuJoCo rendering, a virtual
# environment in .venv with the pinned CPU requirements, and lavid installed in editable mode.
# Idempotent: a second run only checks. Usage: bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
ldconfig -p | grep -q 'libEGL.so.1' || need_apt+=(libegl1 libgl1)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lavid-requirements
if ! cmp -s requirements/cpu.txt "$stamp" 2>/dev/null; then
  echo "[setup] installing requirements/cpu.txt (a few minutes on a fresh machine)"
  .venv/bin/pip install -q -r requirements/cpu.txt
  cp requirements/cpu.txt "$stamp"
fi
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
echo "[setup] ready: $(.venv/bin/python -c 'import lavid, torch; print("lavid", lavid.__version__, "torch", torch.__version__)')"
