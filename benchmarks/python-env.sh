#!/usr/bin/env bash
# Creates (once) the Python environment the cross-checks under benchmarks/ use, outside the
# repository: $ZO_CACHE/venv (default ~/.cache/zo/venv). llama-cpp-python builds llama.cpp from
# source here (a few minutes on 2 cores). With --with-torch it also installs PyTorch and gguf for
# benchmarks/rome_vs_zo.py (PyPI's Linux torch wheel brings its CUDA libraries: about 3 GB; they
# are loaded but unused on this CPU-only path). Prints the environment's python.
set -euo pipefail
cache="${ZO_CACHE:-$HOME/.cache/zo}"
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    # CPU build, no OpenMP dependency surprises: llama.cpp's own defaults.
    "$venv/bin/pip" install --quiet "llama-cpp-python==0.3.16" numpy >&2
fi
if [ "${1:-}" = "--with-torch" ] && ! "$venv/bin/python" -c "import torch, gguf" 2>/dev/null; then
    "$venv/bin/pip" install --quiet "torch==2.15.0" "gguf==0.19.0" >&2
fi
echo "$venv/bin/python"
