#!/usr/bin/env bash
# One command for a new user: installs what zo needs, fetches the default model, builds,
# and runs the main job on it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
model=$(scripts/fetch-model.sh)
swift build -c release
prompt="The capital of France is"
echo
echo "== zorun generate --prompt \"$prompt\" -n 24   (model: $model)"
.build/release/zorun generate --model "$model" --prompt "$prompt" -n 24
