#!/bin/sh
# Install LoopBack 3 from npm into a scratch directory outside the repository (default /tmp/lb3peer) and
# copy the peer app there; node_modules never enters git. Idempotent: npm skips what is installed.
set -eu
dir="${1:-/tmp/lb3peer}"
mkdir -p "$dir"
cp "$(dirname "$0")/server.js" "$dir/server.js"
cd "$dir"
[ -f package.json ] || npm init -y >/dev/null
[ -d node_modules/loopback ] || npm install --no-audit --no-fund loopback@3 >/dev/null
echo "$dir"
