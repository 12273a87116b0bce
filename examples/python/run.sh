#!/usr/bin/env bash
# Runs the Python example client against a Strata server.
#
#   examples/python/run.sh [HOST:PORT]      (default 127.0.0.1:50051)
#
# 1. makes a virtualenv in examples/python/.venv and installs requirements.txt into it
#    (again only when requirements.txt changed);
# 2. generates the stubs from the repository's proto/ into examples/python/gen/ (every run,
#    from scratch, so a changed .proto is always picked up);
# 3. runs example.py; its exit code is this script's.
#
# PYTHON picks the interpreter that makes the virtualenv (default: python3).
set -euo pipefail

target="${1:-127.0.0.1:50051}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
gen="$here/gen"
stamp="$venv/requirements.installed.txt"

# 1. The virtualenv, installed from the pinned requirements.
# A virtualenv without pip (a `venv` that failed half-way) is made again.
if [[ ! -x "$venv/bin/pip" ]]; then
  rm -rf "$venv"
  if ! "${PYTHON:-python3}" -m venv "$venv"; then
    rm -rf "$venv"
    echo "run.sh: python3 -m venv failed (on Debian or Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  echo "installing $here/requirements.txt into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
  # Written only once the install succeeded, so a failed one is tried again next run.
  cp "$here/requirements.txt" "$stamp"
fi
python="$venv/bin/python"

# 2. Stubs for every .proto under proto/ (messages, services and type hints).
rm -rf "$gen"
mkdir -p "$gen"
protos=()
while IFS= read -r -d '' file; do
  protos+=("$file")
done < <(find "$repo/proto" -name '*.proto' -print0 | sort -z)
if [[ ${#protos[@]} -eq 0 ]]; then
  echo "no .proto files under $repo/proto" >&2
  exit 1
fi
"$python" -m grpc_tools.protoc -I "$repo/proto" \
  --python_out="$gen" --grpc_python_out="$gen" --pyi_out="$gen" \
  "${protos[@]}"

# 3. The example itself.
export PYTHONPATH="$gen${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/example.py" "$target"
