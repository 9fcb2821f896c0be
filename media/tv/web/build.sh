#!/usr/bin/env bash
# Install the TV page's browser dependencies (hls.js) from npm into media/tv/web/node_modules,
# where the gateway serves them from (sites have no internet). Idempotent and fast when done.
# Needs Node.js and npm (Debian 12: apt-get install nodejs npm).
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.seabridge-installed-lock
if [ -f node_modules/hls.js/dist/hls.min.js ] && cmp -s package-lock.json "$stamp"; then
  exit 0
fi
npm ci --omit=dev --no-audit --no-fund --loglevel=error
test -f node_modules/hls.js/dist/hls.min.js
cp package-lock.json "$stamp"
