#!/usr/bin/env bash
# Runs Strata's TypeScript example client against a running server.
#
#   examples/typescript/run.sh [HOST:PORT]      (default 127.0.0.1:50051)
#
# From any directory: installs the pinned packages (npm ci, only when node_modules is
# missing or package-lock.json changed), generates the TypeScript code of proto/ and of
# google/rpc's error details into gen/ (deleted and made again every run), type-checks
# everything (tsc --noEmit) and runs example.ts. Exits with the example's exit code.
set -euo pipefail

ADDRESS=${1:-127.0.0.1:50051}
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$HERE/../.." && pwd -P)
cd "$HERE"

command -v node >/dev/null 2>&1 || { echo "run.sh: node (20 or newer) is needed" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "run.sh: npm is needed" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    { echo "run.sh: node 20 or newer is needed, not $(node --version)" >&2; exit 1; }

# Install when node_modules is missing or the lockfile changed since the last install.
# No install scripts are needed (esbuild finds its platform binary without its own).
STAMP=node_modules/.package-lock.sha256
if command -v sha256sum >/dev/null 2>&1; then
    LOCK_SUM=$(sha256sum <package-lock.json | cut -d' ' -f1)
else
    LOCK_SUM=$(shasum -a 256 <package-lock.json | cut -d' ' -f1)  # macOS
fi
if [ ! -d node_modules ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$LOCK_SUM" ]; then
    echo "run.sh: npm ci" >&2
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2
    echo "$LOCK_SUM" >"$STAMP"
fi

# Generate: buf (pinned by the repo) runs the local protoc-gen-es over proto/ and
# google/rpc/{status,error_details}.proto of the pinned google-proto-files package.
BUF=$("$ROOT/deploy/local/buf.sh" path)
rm -rf gen
"$BUF" generate

# Type-check the example against the generated code: a proto change that breaks it fails.
node_modules/.bin/tsc --noEmit -p tsconfig.json

# Run it; its exit code is ours.
exec node_modules/.bin/tsx example.ts "$ADDRESS"
