#!/usr/bin/env bash
# Step 3 with whichever Blender works here: a Blender on PATH whose Python has numpy
#   blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py -- ARGS
# else the pip bpy module
#   python animation_script.py -- ARGS
# Usage (from blender/): bash render.sh --n_frames=3000 --height=64 --width=64
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "--" ]; then shift; fi  # `bash render.sh -- --n_frames=...` works too
if command -v blender >/dev/null && blender -b --factory-startup --python-exit-code 1 --python-expr "import numpy" >/dev/null 2>&1; then
    cmd=(blender -b custom_zebra.blend --python-exit-code 1 -P animation_script.py -- "$@")
else
    cmd=("${PYTHON:-python3}" animation_script.py -- "$@")
fi
echo "${cmd[*]}"
exec "${cmd[@]}"
