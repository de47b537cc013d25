#!/usr/bin/env bash
# DyHead Explorer: one entry point that installs what is missing, then runs.
#   ./run.sh app    the dashboard on the bundled demo model and demo data
#   ./run.sh test   the test suite
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

ensure_python_packages() {
  local stamp=".cache/requirements.sha256"
  local want
  want="$(sha256sum requirements.txt | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$PYTHON" -c "import torch, torchvision, pycocotools, streamlit" 2>/dev/null; then
    return
  fi
  echo "Installing Python packages from requirements.txt ..."
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -r requirements.txt
  mkdir -p .cache && echo "$want" > "$stamp"
}

ensure_chromium() {
  # The end-to-end app test drives Debian's headless Chromium.
  if command -v chromium >/dev/null 2>&1; then return; fi
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium (for the end-to-end browser test) ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not found and cannot be installed here; the browser test will skip" >&2
  fi
}

case "${1:-}" in
  app)
    shift
    ensure_python_packages
    exec "$PYTHON" -m streamlit run app/main.py --server.fileWatcherType none --server.headless true "$@"
    ;;
  test)
    shift
    ensure_python_packages
    ensure_chromium
    exec "$PYTHON" -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh app | test [extra arguments]" >&2
    exit 2
    ;;
esac
