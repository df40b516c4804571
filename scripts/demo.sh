#!/usr/bin/env bash
# Install what the demo needs, then run `plantbus demo` with any extra options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$root"
exec plantbus demo "$@"
