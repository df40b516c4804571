#!/usr/bin/env bash
# Install what the tests need, start the services they use, then run pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$root"
bash scripts/services.sh
set +e
python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no test: a wrong selection, so it fails.
exit $status
