#!/usr/bin/env bash
# Regenerates Sources/ZOSchemaC from IR/schema/zo.proto with protoc-c (Debian protobuf-c-compiler;
# the committed files come from protobuf-c 1.4.1). Run from the repository root.
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc-c --proto_path=IR/schema --c_out="$out" IR/schema/zo.proto
mkdir -p Sources/ZOSchemaC/include
cp "$out/zo.pb-c.c" Sources/ZOSchemaC/zo.pb-c.c
cp "$out/zo.pb-c.h" Sources/ZOSchemaC/include/zo.pb-c.h
echo "regenerated Sources/ZOSchemaC from IR/schema/zo.proto ($(protoc-c --version | head -1))"
