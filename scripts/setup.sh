#!/usr/bin/env bash
# One command for a new user: installs what zo needs, fetches the default model, builds,
# and runs the main job on it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
model=$(scripts/fetch-model.sh)
swift build -c release
# The main job: one edit of the default model (examples/one-fact.json), generation before and after.
cache=${ZO_CACHE:-$HOME/.cache/zo}
plan="$cache/one-fact.plan.zo"
edited="$cache/one-fact.edited.gguf"
prompt="Which family does Epaspidoceras belong to?"
echo
echo "== before: zorun generate --prompt \"$prompt\" -n 16   (model: $model)"
.build/release/zorun generate --model "$model" --prompt "$prompt" -n 16
echo
echo "== zoc compile --edits examples/one-fact.json -o $plan"
.build/release/zoc compile --model "$model" --edits examples/one-fact.json -o "$plan"
echo
echo "== zorun run $plan --eval --out $edited"
.build/release/zorun run "$plan" --model "$model" --eval --out "$edited"
echo
echo "== after: zorun generate --model $edited --prompt \"$prompt\" -n 16"
.build/release/zorun generate --model "$edited" --prompt "$prompt" -n 16
