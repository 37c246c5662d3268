#!/usr/bin/env bash
# Builds bench/readback (Go, GOPATH mode, Debian's packaged grpc: what ../shared/anchor-bench's
# setup.sh installs) into /tmp/anchor-bench/bin/mokv-readback, with stubs from proto/kv.proto,
# then runs it with the given flags, e.g.:
#   bench/readback.sh -addr 127.0.0.1:8400 -ca ~/.mokv/ca.pem -cert ~/.mokv/root-client.pem \
#     -key ~/.mokv/root-client-key.pem -method stream -runs 2
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=/tmp/anchor-bench
SRC=$ROOT/build/gopath/src/mokvreadback
BIN=$ROOT/bin/mokv-readback
if [[ ! -x $BIN || $HERE/readback/main.go -nt $BIN || $HERE/../proto/kv.proto -nt $BIN ]]; then
  rm -rf "$SRC" && mkdir -p "$SRC/api"
  cp "$HERE/readback/main.go" "$SRC/"
  M="Mkv.proto=mokvreadback/api,Mgoogle/protobuf/empty.proto=github.com/golang/protobuf/ptypes/empty"
  protoc -I "$HERE/../proto" -I /usr/include \
    --go_out="$SRC/api" --go_opt="paths=source_relative,$M" \
    --go-grpc_out="$SRC/api" --go-grpc_opt="paths=source_relative,$M" kv.proto
  GO111MODULE=off GOPATH="$ROOT/build/gopath:/usr/share/gocode" GOCACHE="$ROOT/gocache" \
    GOFLAGS= GOPROXY=off CGO_ENABLED=0 go build -trimpath -o "$BIN" mokvreadback
fi
exec "$BIN" "$@"
