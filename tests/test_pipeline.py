"""End to end: the README's first command in its quick setting, on a copy of the repo, with real
bpy rendering and real training; then the hand-offs between the stages line up."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pasyn import rig
from pasyn.files import REPO

N_QUICK = 100
pytestmark = pytest.mark.slow  # the whole --quick pipeline, about two minutes


def _copy_repo(dest):
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = _copy_repo(tmp_path_factory.mktemp("repo"))
    env = dict(os.environ, PASYN_SKIP_SETUP="1", PYTHON=sys.executable)
    r = subprocess.run(["bash", "run_pipeline.sh", "--quick"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root, r.stdout


def test_pipeline_prints_where_the_data_set_is_and_time_per_step(quick_run):
    root, out = quick_run
    assert "Time per step:" in out
    for step in ("1 train VAE", "2 generate poses", "3 render zebras", "4 train AdaIN", "5 stylize"):
        assert re.search(rf"{step}\s+\d+ s", out), step
    assert str(root / "style_transfer" / "stylized_images" / "annotations.json") in out


def test_hand_offs_line_up_in_count_order_and_name(quick_run):
    root, _ = quick_run
    poses = np.load(root / "blender" / "my_vae_poses.npy")
    gt = np.load(root / "blender" / "blender_gt.npy")
    vis = np.load(root / "blender" / "blender_vis.npy")
    herd = int(re.search(r"HERD=(\d+)", (root / "run_pipeline.sh").read_text()).group(1))
    assert poses.shape == (N_QUICK * herd, 36) and poses.dtype == np.float32  # each herd member its own row
    assert gt.shape == (N_QUICK, 38) and gt.dtype == np.float32
    assert vis.shape == (N_QUICK, 19) and vis.dtype == np.uint8
    pngs = sorted((root / "style_transfer" / "data" / "synthetic_images" / "zebra").glob("*.png"))
    jpgs = sorted((root / "style_transfer" / "stylized_images").glob("stylized_zebra_*.jpg"))
    assert [p.name for p in pngs] == [f"zebra_synth_{i:05d}.png" for i in range(N_QUICK)]
    assert [p.name for p in jpgs] == [f"stylized_zebra_{i:05d}.jpg" for i in range(N_QUICK)]
    rendered = json.loads((root / "blender" / "annotations.json").read_text())
    stylized = json.loads((root / "style_transfer" / "stylized_images" / "annotations.json").read_text())
    assert [i["file_name"] for i in rendered["images"]] == [p.name for p in pngs]
    assert [i["file_name"] for i in stylized["images"]] == [p.name for p in jpgs]
    for k in (0, N_QUICK // 2, N_QUICK - 1):
        expected = []
        for j in rig.AP10K_INDEX_IN_RIG:
            v = int(vis[k, j])
            expected += [gt[k, 2 * j], gt[k, 2 * j + 1], v] if v else [0, 0, 0]
        for labels in (rendered, stylized):  # frame k's first zebra: the first annotation of image k + 1
            ann = next(a for a in labels["annotations"] if a["image_id"] == k + 1)
            assert np.allclose(ann["keypoints"], expected, atol=1e-3)


def test_annotations_load_in_the_coco_reader(quick_run):
    from pycocotools.coco import COCO
    root, _ = quick_run
    coco = COCO(str(root / "style_transfer" / "stylized_images" / "annotations.json"))
    assert len(coco.getImgIds()) == N_QUICK
    assert coco.loadCats(22)[0]["name"] == "zebra"
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert ann["num_keypoints"] > 0 and ann["area"] > 0
