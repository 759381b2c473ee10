#!/usr/bin/env bash
# Installs the requirements, then runs the whole test suite:
#   bash run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec "${PYTHON:-python3}" -m pytest tests "$@"
