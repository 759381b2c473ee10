#!/usr/bin/env bash
# What each stage is worth, one command per comparison (run from pose_net/ or anywhere):
#   bash compare.sh stylize [REAL_ANN REAL_DIR]   renders on grey (step 3) vs stylized images (step 5)
#   bash compare.sh poses   [REAL_ANN REAL_DIR]   the VAE's poses vs uniformly random leg angles: re-runs
#                                                 steps 2, 3 and 5 with `generate.py --mode uniform` into
#                                                 *_uniform folders (step 4's AdaIN is shared, nothing is overwritten)
#   bash compare.sh real TRAIN_ANN TRAIN_DIR TEST_ANN TEST_DIR
#                                                 synthetic only vs your photos only vs both (--extra);
#                                                 with one labelled set, recipe.py cross-validates it by photo
# Each arm trains into runs/<comparison>/<arm>/checkpoint.pt (its losses.jpg beside it) with train.py's defaults and is scored on the same
# held-out synthetic frames and, when given, on your labelled photos (COCO keypoints, AP-10K's zebra).
# EPOCHS=N shortens every run; N_FRAMES and SIZE (default 3000, 64) size the poses re-run.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
EPOCHS=${EPOCHS:-}
N_FRAMES=${N_FRAMES:-3000}
SIZE=${SIZE:-64}
ST=../style_transfer
usage() { sed -n 2,13p "$0" >&2; exit 2; }

train() {  # train NAME ARGS...: runs/<comparison>/NAME.pt, resumed when it is already there
    local name=$1; shift
    echo; echo "== train $name: python train.py $* --checkpoint runs/$WHAT/$name/checkpoint.pt"
    "$PYTHON" train.py "$@" ${EPOCHS:+--epochs "$EPOCHS"} --checkpoint "runs/$WHAT/$name/checkpoint.pt"
}
score() {  # score NAME LABEL ARGS...: one evaluate.py run, its PCK/AP lines kept for the summary
    local name=$1 label=$2; shift 2
    echo; echo "== score $name on $label: python evaluate.py --checkpoint runs/$WHAT/$name/checkpoint.pt $*"
    "$PYTHON" evaluate.py --checkpoint "runs/$WHAT/$name/checkpoint.pt" --sheet "runs/$WHAT/$name/on_${label// /_}.jpg" "$@" \
        | tee "runs/$WHAT/.last"
    local pck ap
    pck=$(grep -o 'PCK@0.05 [0-9.]*   PCK@0.1 [0-9.]*' "runs/$WHAT/.last" || true)
    ap=$(grep -o 'AP [0-9.]*  AP50' "runs/$WHAT/.last" | cut -d' ' -f2 || true)
    SUMMARY+=("$(printf '%-22s %-34s %s   OKS AP %s' "$name" "$label" "$pck" "${ap:-n/a}")")
}

WHAT=${1:-}; [ -n "$WHAT" ] || usage; shift
mkdir -p "runs/$WHAT"
SUMMARY=()
STY=("$ST/stylized_images/annotations.json" "$ST/stylized_images")
case "$WHAT" in
  stylize)
    [ $# = 0 ] || [ $# = 2 ] || usage
    train renders --ann ../blender/annotations.json --images "$ST/data/synthetic_images/zebra"
    train stylized --ann "${STY[0]}" --images "${STY[1]}"
    for arm in renders stylized; do
        score $arm "held-out renders" --held_out_in ../blender/annotations.json "$ST/data/synthetic_images/zebra"
        score $arm "held-out stylized" --held_out_in "${STY[@]}"
        [ $# = 0 ] || score $arm "your photos" --real "$1" "$2"
    done ;;
  poses)
    [ $# = 0 ] || [ $# = 2 ] || usage
    UNI=("$ST/stylized_images_uniform/annotations.json" "$ST/stylized_images_uniform")
    if [ ! -f "${UNI[0]}" ]; then  # steps 2, 3, 5 again with uniform leg angles, into their own folders
        (cd ../VAE && "$PYTHON" generate.py --mode uniform --n_frames="$N_FRAMES" --out ../blender/uniform_poses.npy)
        (cd ../blender && bash render.sh --n_frames="$N_FRAMES" --height="$SIZE" --width="$SIZE" \
            --poses uniform_poses.npy --image_dir ../style_transfer/data/synthetic_images_uniform/zebra \
            --label_dir uniform_labels)
        (cd "$ST" && "$PYTHON" stylize.py --height="$SIZE" --width="$SIZE" --alpha=0.5 \
            --frames_dir data/synthetic_images_uniform/zebra --shadow_dir data/synthetic_images_uniform/zebra_shadows \
            --annotations ../blender/uniform_labels/annotations.json --out_dir stylized_images_uniform)
    fi
    train vae_poses --ann "${STY[0]}" --images "${STY[1]}"
    train uniform_poses --ann "${UNI[0]}" --images "${UNI[1]}"
    for arm in vae_poses uniform_poses; do
        score $arm "held-out VAE-pose frames" --held_out_in "${STY[@]}"
        score $arm "held-out uniform-pose frames" --held_out_in "${UNI[@]}"
        [ $# = 0 ] || score $arm "your photos" --real "$1" "$2"
    done ;;
  real)
    [ $# = 4 ] || usage
    train synthetic --ann "${STY[0]}" --images "${STY[1]}"
    # alone, a few photos get as many steps per epoch as the synthetic set (each drawn REPEAT times)
    REPEAT=$("$PYTHON" -c "import json, sys; n = lambda f: len(json.load(open(f))['annotations']); \
print(max(1, round(0.9 * n(sys.argv[1]) / max(1, n(sys.argv[2])))))" "${STY[0]}" "$1")
    train real --ann "$1" --images "$2" --val_fraction 0 --repeat "$REPEAT"
    train both --ann "${STY[0]}" --images "${STY[1]}" --extra "$1" "$2"
    for arm in synthetic real both; do
        score $arm "your test photos" --real "$3" "$4"
    done ;;
  *) usage ;;
esac
rm -f "runs/$WHAT/.last"
echo
echo "Summary ($WHAT; PCK threshold = alpha x the longer bbox side, flip test):"
printf '  %s\n' "${SUMMARY[@]}"
