#!/usr/bin/env bash
# Runs every test (unit, golden, and end-to-end on the real model). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-model.sh >/dev/null
# Calibration runs the float model through OpenBLAS, which picks its sgemm kernels by CPU: on an
# AVX-512 CPU they round differently in the last bits, and two golden quantize cases (ranges to
# 8 digits) differ. The tests pin OpenBLAS's AVX2 kernels so every x86 machine gives the same IR.
if [ "$(uname -m)" = x86_64 ]; then export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"; fi
# Release mode: the end-to-end tests run the real model through the reference interpreter.
swift build -c release --build-tests
swift test -c release --skip-build --disable-swift-testing
