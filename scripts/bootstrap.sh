#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install plantbus into it.
# Sourced by demo.sh and test.sh; re-installs only when pyproject.toml changed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PLANTBUS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "Creating the virtual environment in $venv" >&2
    "$python" -m venv "$venv"
fi

stamp="$venv/.plantbus-installed"
wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing plantbus and its pinned dependencies into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[test]"
    echo "$wanted" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
