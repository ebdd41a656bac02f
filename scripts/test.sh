#!/usr/bin/env bash
# Runs every test (unit, golden, and end-to-end on the real model). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-model.sh >/dev/null
# Release mode: the end-to-end tests run the real model through the reference interpreter.
swift build -c release --build-tests
swift test -c release --skip-build --disable-swift-testing
