#!/usr/bin/env bash
# Installs what PASyn-v2 needs into the active Python 3.11 (a venv or conda env is best):
#   bash setup.sh
# The pip `bpy` module renders step 3, so a separate Blender install is optional.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: PASyn-v2 needs Python 3.11 (the pip bpy 4.5 module is built for it); found $("$PYTHON" --version 2>&1)" >&2
    exit 2
fi
# pip is quick when everything is already there, so this runs every time.
"$PYTHON" -m pip install -q --disable-pip-version-check -r requirements.txt
