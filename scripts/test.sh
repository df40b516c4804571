#!/usr/bin/env bash
# Install what the tests need, check the code, then run pytest with any
# options given. The tests start their own trytond and use the machine's
# Mosquitto, NATS JetStream and PostgreSQL, which services.sh starts if needed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$root"
bash scripts/services.sh
# Lint and type-check first: both take seconds and name the line at fault.
ruff check src tests bench
mypy src
set +e
python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no test; that is a failure here too.
exit $status
