#!/usr/bin/env bash
# The whole PASyn-v2 pipeline, steps 1-5 (and 6 on request), each run as the README shows it:
#   bash run_pipeline.sh              # the seed Quick Start: 3000 frames, 64x64, 250 + 10 epochs
#   bash run_pipeline.sh --quick      # the same path in a few minutes: 100 frames, 30 + 1 epochs
#   bash run_pipeline.sh --pose_net   # then step 6: train and score a pose network on the data set
# Installs the requirements first. Step 3 uses a Blender on PATH (`blender -b ...`) when its Python
# has numpy, else the pip bpy module (`python animation_script.py -- ...`): see blender/render.sh.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
PYTHON=${PYTHON:-python3}

N_FRAMES=3000; SIZE=64; VAE_EPOCHS=250; ST_EPOCHS=10
POSE_NET=0; PN_EPOCHS=()
for arg in "$@"; do
    case "$arg" in
        --quick) N_FRAMES=100; VAE_EPOCHS=30; ST_EPOCHS=1; PN_EPOCHS=(--epochs 2) ;;
        --pose_net) POSE_NET=1 ;;
        *) echo "usage: bash run_pipeline.sh [--quick] [--pose_net]" >&2; exit 2 ;;
    esac
done

[ "${PASYN_SKIP_SETUP:-}" = 1 ] || bash setup.sh  # the tests set it: they run installed

TIMES=()
step() {  # step "name" dir command...: runs one numbered step in its folder and times it
    local name=$1 dir=$2; shift 2
    echo; echo "== $name: (cd $dir && $*)"
    local t0=$SECONDS
    (cd "$ROOT/$dir" && "$@")
    TIMES+=("$(printf '%-34s %6d s' "$name" $((SECONDS - t0)))")
}

step "1 train VAE" VAE "$PYTHON" train.py --epochs=$VAE_EPOCHS --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01
step "2 generate poses" VAE "$PYTHON" generate.py --n_frames=$N_FRAMES
step "3 render zebras" blender bash render.sh --n_frames=$N_FRAMES --height=$SIZE --width=$SIZE
step "3 contact sheet" blender "$PYTHON" contact_sheet.py
step "4 make backgrounds" style_transfer "$PYTHON" make_backgrounds.py
step "4 train AdaIN" style_transfer "$PYTHON" train.py --epochs $ST_EPOCHS --height=$SIZE --width=$SIZE --lr 0.01 --batch_size 64 --alpha=0.5 --l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images
step "5 stylize" style_transfer "$PYTHON" stylize.py --height=$SIZE --width=$SIZE --alpha=0.5
if [ "$POSE_NET" = 1 ]; then
    step "6 train pose network" pose_net "$PYTHON" train.py "${PN_EPOCHS[@]}"
    step "6 evaluate pose network" pose_net "$PYTHON" evaluate.py
fi

echo
echo "Time per step:"
printf '  %s\n' "${TIMES[@]}"
echo
echo "The data set:"
echo "  images:        $ROOT/style_transfer/stylized_images/stylized_zebra_*.jpg"
echo "  annotations:   $ROOT/style_transfer/stylized_images/annotations.json  (COCO, AP-10K zebra keypoints)"
echo "  contact sheet: $ROOT/style_transfer/stylized_images_contact_sheet.jpg"
echo "  renders:       $ROOT/style_transfer/data/synthetic_images/zebra/ + blender/annotations.json"
