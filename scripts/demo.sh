#!/usr/bin/env bash
# `make demo`: set up what `canaryd demo` needs on a fresh Debian or Ubuntu machine, then run it.
#   1. the virtualenv (.venv) with canaryd and the demo (demo/, which adds `canaryd demo`) installed,
#      when they are missing;
#   2. Prometheus and Alertmanager (Debian packages) when they are missing: installed through apt when
#      this runs as root, otherwise the one command to run is printed (exit 2);
#   3. `canaryd demo "$@"` (for instance: bash scripts/demo.sh --scenario bad --keep-running).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PACKAGES="prometheus prometheus-alertmanager"
INSTALL="sudo apt-get install -y $PACKAGES"

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "$@"
}

# 1. The virtualenv.
if [ ! -x "$VENV/bin/canaryd" ]; then
  if ! command -v "$PYTHON" >/dev/null; then
    echo "demo: $PYTHON not found; install Python 3.11 or newer (sudo apt-get install -y python3 python3-venv)" >&2
    exit 2
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "demo: canaryd needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)" >&2
    exit 2
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "demo: creating $VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
      # Debian and Ubuntu ship venv's pip bootstrap separately.
      rm -rf "$VENV"
      if as_root; then
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
      else
        echo "demo: cannot create a virtualenv; run: sudo apt-get install -y python3-venv" >&2
        exit 2
      fi
    fi
  fi
  echo "demo: installing canaryd into $VENV"
  "$VENV/bin/pip" install --quiet -e .
fi
if [ ! -x "$VENV/bin/canaryd-demo" ]; then
  echo "demo: installing the demo (demo/) into $VENV"
  "$VENV/bin/pip" install --quiet -e ./demo
fi

# 2. Prometheus and Alertmanager.
# The same paths canaryd looks at (CANARYD_PROMETHEUS / CANARYD_ALERTMANAGER point elsewhere).
missing=""
[ -x "${CANARYD_PROMETHEUS:-/usr/bin/prometheus}" ] || missing="$missing prometheus"
[ -x "${CANARYD_ALERTMANAGER:-/usr/bin/prometheus-alertmanager}" ] || missing="$missing prometheus-alertmanager"
if [ -n "$missing" ]; then
  if as_root && command -v apt-get >/dev/null; then
    echo "demo: installing$missing"
    # The packages also start system services on the default ports; the demo uses free ports of its own.
    apt_install $PACKAGES
  else
    echo "demo:$missing not installed; run this, then make demo again:" >&2
    echo "  $INSTALL" >&2
    exit 2
  fi
fi

# 3. The demo.
exec "$VENV/bin/canaryd" demo "$@"
