#!/usr/bin/env bash
# The buf CLI (API lint and breaking-change check of proto/), pinned, under .strata/tools.
#
#   deploy/local/buf.sh lint       buf lint proto (STANDARD rules, proto/buf.yaml)
#   deploy/local/buf.sh breaking   buf breaking proto against the previous commit's protos
#   deploy/local/buf.sh path       print the binary's path (installing it if needed)
#
# buf ships in the npm package @bufbuild/buf. On x86-64 Linux its binary is taken straight
# from the npm registry's tarball of @bufbuild/buf-linux-x64 (checked against a pinned
# SHA-256), so neither node nor npm is needed; elsewhere `npm install` fetches it.
# `breaking` compares with HEAD~1; in a shallow clone it deepens the history by one commit
# first, and says so and passes when there is no previous commit at all.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
VERSION=1.75.0
X64_SHA256=98b19d4b2b46130e083157490c54dfdcb8ea771e53204d3c6a06a2b12edd0503
DIR="$ROOT/.strata/tools/buf-$VERSION"
BIN="$DIR/buf"

fetch() {
    local url=$1 out=$2
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$out" "$url"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$out" "$url"
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$url" "$out"
    fi
}

install_buf() {
    [ -x "$BIN" ] && return 0
    mkdir -p "$DIR"
    local tmp
    tmp=$(mktemp -d)
    if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
        fetch "https://registry.npmjs.org/@bufbuild/buf-linux-x64/-/buf-linux-x64-$VERSION.tgz" "$tmp/buf.tgz"
        echo "$X64_SHA256  $tmp/buf.tgz" | sha256sum -c --quiet -
        tar -xzf "$tmp/buf.tgz" -C "$tmp"
        install -m 0755 "$tmp/package/bin/buf" "$BIN"
    else
        command -v npm >/dev/null 2>&1 || { echo "buf.sh: npm is needed to install buf on $(uname -sm)" >&2; exit 1; }
        npm install --silent --no-audit --no-fund --prefix "$tmp" "@bufbuild/buf@$VERSION"
        install -m 0755 "$(find "$tmp/node_modules/@bufbuild" -path '*/bin/buf' -type f | head -n 1)" "$BIN"
    fi
    rm -rf "$tmp"
}

install_buf
cd "$ROOT"
case "${1:-}" in
    path) echo "$BIN" ;;
    lint) "$BIN" lint proto ;;
    breaking)
        if ! git rev-parse --verify --quiet HEAD~1 >/dev/null; then
            git fetch --quiet --deepen=1 2>/dev/null || true
        fi
        if ! git rev-parse --verify --quiet HEAD~1 >/dev/null; then
            echo "buf breaking: no previous commit to compare with; skipped"
            exit 0
        fi
        "$BIN" breaking proto --against ".git#ref=HEAD~1,subdir=proto"
        ;;
    *) echo "usage: $0 lint|breaking|path" >&2; exit 2 ;;
esac
