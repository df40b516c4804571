#!/usr/bin/env bash
# Install what the demo needs, then run `plantbus demo` with any extra options.
# With `--backbone jetstream` or `--state postgres`, start the local NATS and
# PostgreSQL first where they are not running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$root"
case " $* " in
    *" jetstream "* | *"=jetstream "* | *" postgres "* | *"=postgres "*)
        bash scripts/services.sh ;;
esac
exec plantbus demo "$@"
