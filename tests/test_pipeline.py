"""End to end: the README's first command in its quick setting, on a copy of the repo, with real
bpy rendering and real training; then the hand-offs between the stages line up."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from pasyn import rig
from pasyn.files import REPO

N_QUICK = 100


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
    assert poses.shape == (N_QUICK, 36) and poses.dtype == np.float32
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
        for ann in (rendered["annotations"][k], stylized["annotations"][k]):
            assert ann["image_id"] == k + 1
            assert np.allclose(ann["keypoints"], expected, atol=1e-3)


def test_annotations_load_in_the_coco_reader(quick_run):
    from pycocotools.coco import COCO
    root, _ = quick_run
    coco = COCO(str(root / "style_transfer" / "stylized_images" / "annotations.json"))
    assert len(coco.getImgIds()) == N_QUICK
    assert coco.loadCats(22)[0]["name"] == "zebra"
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert ann["num_keypoints"] > 0 and ann["area"] > 0


def test_visible_labels_fall_on_the_zebra(quick_run):
    root, _ = quick_run
    gt = np.load(root / "blender" / "blender_gt.npy").reshape(-1, 19, 2)
    vis = np.load(root / "blender" / "blender_vis.npy")
    on, total = 0, 0
    for k, png in enumerate(sorted((root / "style_transfer" / "data" / "synthetic_images" / "zebra").glob("*.png"))):
        alpha = np.asarray(Image.open(png))[..., 3]
        # 1 px tolerance: any zebra pixel in the 3x3 around the label counts
        grown = np.pad(alpha > 0, 1)
        grown = np.max([grown[dy:dy + alpha.shape[0], dx:dx + alpha.shape[1]] for dy in range(3) for dx in range(3)], 0)
        for (x, y), v in zip(gt[k], vis[k]):
            if v == 2:
                total += 1
                on += bool(grown[min(int(y), alpha.shape[0] - 1), min(int(x), alpha.shape[1] - 1)])
    assert total > 0 and on / total >= 0.99, (on, total)


def test_two_array_tasks_and_a_merge_equal_the_whole_run(quick_run):
    """Scale-out as the README documents it: render_array.sbatch as two tasks, then merge_shards.py."""
    root, _ = quick_run
    blender_dir = root / "blender"
    whole_gt, whole_vis = np.load(blender_dir / "blender_gt.npy"), np.load(blender_dir / "blender_vis.npy")
    whole_ann = json.loads((blender_dir / "annotations.json").read_text())
    (blender_dir / "blender_gt.npy").unlink()
    for task in (0, 1):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="2", N_FRAMES=str(N_QUICK))
        r = subprocess.run(["bash", "render_array.sbatch"], cwd=blender_dir, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(p.name for p in (blender_dir / "shards").glob("*.npz")) == [
        f"frames_00000_{N_QUICK // 2:05d}.npz", f"frames_{N_QUICK // 2:05d}_{N_QUICK:05d}.npz"]
    r = subprocess.run([sys.executable, "merge_shards.py"], cwd=blender_dir, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(blender_dir / "blender_gt.npy"), whole_gt)
    assert np.array_equal(np.load(blender_dir / "blender_vis.npy"), whole_vis)
    merged = json.loads((blender_dir / "annotations.json").read_text())
    assert merged["images"] == whole_ann["images"] and merged["annotations"] == whole_ann["annotations"]


def test_readme_verification_snippets_print_what_they_say(quick_run):
    root, _ = quick_run
    readme = (REPO / "README.md").read_text()
    steps = readme.split("### Verification Steps")[1].split("## Troubleshooting")[0]
    snippets = [textwrap.dedent(s) for s in re.findall(r"```python\n(.*?)```", steps, re.S)]
    assert len(snippets) == 3
    outputs = []
    for code in snippets:
        r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                           env=dict(os.environ, MPLBACKEND="Agg"), timeout=120)
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout)
    assert re.search(r"Final epoch: \d+\nFinal train loss: -?[\d.]+\nFinal val loss: -?[\d.]+", outputs[0])
    assert f"Shape: ({N_QUICK}, 36)" in outputs[1]
