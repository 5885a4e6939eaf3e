#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the HTML report's render check
# (experiments/browser_check.py). Idempotent and quiet: does nothing when
# /usr/bin/chromium already exists. Needs root (or sudo) and a Debian/Ubuntu apt.
set -euo pipefail
CHROMIUM=/usr/bin/chromium  # where Debian's package puts it (experiments/browser_check.py looks there)
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install_browser.sh: $CHROMIUM missing and not root (no sudo); install Debian's 'chromium' package" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser.sh: apt-get not found; install Chromium with your package manager (need $CHROMIUM)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Output goes to a log that is shown only on failure, so CI logs stay short.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install_browser.sh: apt-get install chromium failed (see above)" >&2
  exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "install_browser.sh: apt installed chromium but $CHROMIUM is still missing" >&2
  exit 1
fi
