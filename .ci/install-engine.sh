#!/usr/bin/env bash
# Installs the real Smithers engine (smithers-orchestrator + bun, pinned in
# tests/engine/package.json and package-lock.json) into tests/engine/node_modules, for the
# end-to-end tests in tests/engine. Idempotent: a hash of the lockfile is kept in
# node_modules/.lock-hash and the install is skipped while it matches and the binaries run.
#
# `npm install`, not `npm ci`: the lockfile lists optional platform packages that the
# registry these machines reach does not have, and `npm ci` refuses that.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../tests/engine"

start=$(date +%s)
finish() {
    echo "install-engine: $1 in $(($(date +%s) - start)) s"
}

if ! command -v npm >/dev/null 2>&1; then
    echo "install-engine: npm is not on PATH" >&2
    exit 1
fi

want="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp=node_modules/.lock-hash

engine_runs() {
    [ -x node_modules/.bin/bun ] && [ -e node_modules/.bin/smithers ] \
        && node_modules/.bin/bun --version >/dev/null 2>&1
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && engine_runs; then
    finish "already installed (bun $(node_modules/.bin/bun --version))"
    exit 0
fi

rm -f "$stamp"
npm install --no-audit --no-fund --loglevel=error
if ! engine_runs; then
    echo "install-engine: npm install finished but bun/smithers do not run" >&2
    exit 1
fi
# npm install may rewrite the lockfile; a change would mean the pins drifted.
got="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
    echo "install-engine: warning: npm install changed tests/engine/package-lock.json" >&2
fi
echo "$got" >"$stamp"
finish "installed (bun $(node_modules/.bin/bun --version))"
