#!/usr/bin/env bash
# Regenerates models/onnx/onnxpb/onnx.pb.go from onnx.proto of the pinned
# onnx release (taken from its PyPI wheel). Needs protoc (Debian
# protobuf-compiler) and pip; the output is committed, so builds need neither.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
ONNX_VERSION=1.23.2
PROTO_SHA256=547214dd049486a4d5ecbae593e9c72d90b5e8d603944b722eff469e0b5a9cc9
PROTOC_GEN_GO=v1.36.12
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --only-binary :all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 -d "$work" "onnx==$ONNX_VERSION"
unzip -q -o "$work"/onnx-*.whl onnx/onnx.proto -d "$work"
echo "$PROTO_SHA256  $work/onnx/onnx.proto" | sha256sum -c --quiet
GOBIN=$work/bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
(cd "$work/onnx" && PATH=$work/bin:$PATH protoc --go_out="$root/models/onnx/onnxpb" \
  --go_opt=paths=source_relative \
  --go_opt=Monnx.proto=github.com/outpost-edge/outpost/models/onnx/onnxpb onnx.proto)
echo "regenerated models/onnx/onnxpb/onnx.pb.go from onnx $ONNX_VERSION"
