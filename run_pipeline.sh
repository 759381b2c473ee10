#!/usr/bin/env bash
# The whole PASyn-v2 pipeline, steps 1-5 (and 6 on request), each run as the README shows it:
#   bash run_pipeline.sh              # the Quick Start: 3000 frames (herds of up to 3), 64x64, 250 + 10 epochs
#   bash run_pipeline.sh --quick      # the same path in a few minutes: 100 frames, 30 + 1 epochs
#   bash run_pipeline.sh --pose_net   # then step 6: train and score a pose network on the data set
#   bash run_pipeline.sh --photos DIR --annotations ANN
#                                     # your labelled photos (COCO keypoints, AP-10K's zebra): backgrounds
#                                     # cut from them, steps 1-5, then step 6 trained on the synthetic set
#                                     # plus your photos, with its cross-validated figure on them
# Installs the requirements first. Every trainer starts over (--restart): this script makes the data
# set from scratch; to resume one stopped step, run its own command. Step 3 uses a Blender on PATH
# (`blender -b ...`) when its Python has numpy, else the pip bpy module: see blender/render.sh.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
PYTHON=${PYTHON:-python3}

# --- the data set's settings (the seed's commands; see the README for the few chosen by real photos) ---
N_FRAMES=3000; SIZE=64; VAE_EPOCHS=250; ST_EPOCHS=10; ALPHA=0.5; HERD=3
# HERD: up to this many zebras per frame (1 = one zebra each); each zebra is posed from its own pose
# row, so step 2 makes N_FRAMES x HERD rows. Herds scored best on real photos (docs/ablation.md).
RENDER_FLAGS=()   # step 3's scene levers beyond its defaults
STYLE_FLAGS=()    # step 5's named steps beyond its defaults

POSE_NET=0; PN_EPOCHS=(); PHOTOS=""; PHOTO_ANN=""
usage() { sed -n 2,9p "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N_FRAMES=100; VAE_EPOCHS=30; ST_EPOCHS=1; PN_EPOCHS=(--epochs 2) ;;
        --pose_net) POSE_NET=1 ;;
        --photos) [ $# -ge 2 ] || usage; PHOTOS=$(cd "$2" 2>/dev/null && pwd) \
                      || { echo "error: --photos $2 is not a folder" >&2; exit 2; }; shift ;;
        --annotations) [ $# -ge 2 ] || usage; [ -f "$2" ] || { echo "error: --annotations $2 is not a file" >&2; exit 2; }
                       PHOTO_ANN=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift ;;
        *) usage ;;
    esac
    shift
done
if { [ -n "$PHOTOS" ] && [ -z "$PHOTO_ANN" ]; } || { [ -z "$PHOTOS" ] && [ -n "$PHOTO_ANN" ]; }; then
    echo "error: --photos DIR and --annotations ANN go together (your photos and their COCO keypoint file)" >&2
    exit 2
fi

[ "${PASYN_SKIP_SETUP:-}" = 1 ] || bash setup.sh  # the tests set it: they run installed

TIMES=()
step() {  # step "name" dir command...: runs one numbered step in its folder and times it
    local name=$1 dir=$2; shift 2
    echo; echo "== $name: (cd $dir && $*)"
    local t0=$SECONDS
    (cd "$ROOT/$dir" && "$@")
    TIMES+=("$(printf '%-34s %6d s' "$name" $((SECONDS - t0)))")
}

step "1 train VAE" VAE "$PYTHON" train.py --epochs=$VAE_EPOCHS --batch_size=64 --lr=0.001 --w1=0.005 --w2=0.01 --restart
step "2 generate poses" VAE "$PYTHON" generate.py --n_frames=$((N_FRAMES * HERD))
step "3 render zebras" blender bash render.sh --n_frames=$N_FRAMES --height=$SIZE --width=$SIZE --herd $HERD ${RENDER_FLAGS[@]+"${RENDER_FLAGS[@]}"}
step "3 contact sheet" blender "$PYTHON" contact_sheet.py
if [ -n "$PHOTOS" ]; then
    step "4 backgrounds from your photos" style_transfer "$PYTHON" make_backgrounds.py --photos "$PHOTOS" --annotations "$PHOTO_ANN"
else
    step "4 make backgrounds" style_transfer "$PYTHON" make_backgrounds.py
fi
step "4 train AdaIN" style_transfer "$PYTHON" train.py --epochs $ST_EPOCHS --height=$SIZE --width=$SIZE --lr 0.01 --batch_size 64 --alpha=0.5 --l_content_weight=5 --l_style_weight=10 --content_dir=synthetic_images --restart
step "5 stylize" style_transfer "$PYTHON" stylize.py --height=$SIZE --width=$SIZE --alpha=$ALPHA ${STYLE_FLAGS[@]+"${STYLE_FLAGS[@]}"}
if [ "$POSE_NET" = 1 ] && [ -z "$PHOTOS" ]; then
    step "6 train pose network" pose_net "$PYTHON" train.py ${PN_EPOCHS[@]+"${PN_EPOCHS[@]}"} --restart
    step "6 evaluate pose network" pose_net "$PYTHON" evaluate.py
fi
if [ -n "$PHOTOS" ]; then  # step 6 the recipe's way: synthetic set + your photos, cross-validated by photo
    step "6 pose network + your photos" pose_net "$PYTHON" recipe.py --real "$PHOTO_ANN" "$PHOTOS" --seeds 0 \
        --final "$ROOT/pose_net/checkpoint.pt" ${PN_EPOCHS[@]+"${PN_EPOCHS[@]}"}
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
if [ -n "$PHOTOS" ]; then
    echo "  pose network:  $ROOT/pose_net/checkpoint.pt (synthetic set + your photos; its cross-validated figure above)"
fi
