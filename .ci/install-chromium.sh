#!/usr/bin/env bash
# Install what the browser end-to-end test (tests/browser/) drives: headless Chromium and its
# driver from Debian's packages, and the Python Playwright client from PyPI. Playwright is
# pointed at /usr/bin/chromium (executable_path); `playwright install` is never run, because
# it downloads a browser build of its own, which this network does not allow.
#
# Idempotent: what is already installed is left alone; `apt-get update` runs at most once,
# and only when a package is missing. Off Debian (no apt-get) it prints why and exits 0;
# the browser tests then skip locally and fail in CI (CI=true), saying what is missing.
set -euo pipefail

PLAYWRIGHT_SPEC="${TIMETRAVEL_PLAYWRIGHT_SPEC:-playwright>=1.40,<2}"
PYTHON="${PYTHON:-python}"

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)

if [ "${#need_apt[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-chromium: apt-get is not available; cannot install ${need_apt[*]}"
    else
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1; then
                sudo="sudo"
            else
                echo "install-chromium: not root and no sudo; cannot install ${need_apt[*]}" >&2
                exit 1
            fi
        fi
        export DEBIAN_FRONTEND=noninteractive
        # A first try without updating: the package lists may already be there.
        if ! $sudo apt-get install -y --no-install-recommends "${need_apt[@]}"; then
            $sudo apt-get update
            $sudo apt-get install -y --no-install-recommends "${need_apt[@]}"
        fi
    fi
fi

if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --disable-pip-version-check -q "$PLAYWRIGHT_SPEC"
fi

if [ -x /usr/bin/chromium ]; then
    echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium (version unknown)')"
fi
if [ -x /usr/bin/chromedriver ]; then
    echo "install-chromium: $(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
fi
"$PYTHON" -c "import importlib.metadata as m; print('install-chromium: playwright', m.version('playwright'))"
