"""Reliability of step 3 and its hand-off to steps 4-5, by fault injection on real runs.

Images and labels never disagree silently (job ids, per-frame checksums, a manifest written last,
a clean start for another job); Ctrl-C / SIGTERM stop a render within a frame and it resumes;
flags without `--`, read-only and full folders get one line, and so does a negative seed in every
script of the repo (the one seed-refusal test); PNGs carry no time, so the same seed gives the same bytes. Real bpy renders (pip bpy, and Debian's Blender where
installed) at tiny sizes; read-only and full folders are real tmpfs mounts where this user may
mount them (CI runs as root, where chmod does not stop writes), else a chmod-ed folder.
"""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BLENDER_DIR = REPO / "blender"
BLEND = Path(os.environ.get("PASYN_TEST_BLEND", BLENDER_DIR / "custom_zebra.blend"))
sys.path.insert(0, str(REPO))
from pasyn import manifest, shards  # noqa: E402
from pasyn.files import UserError, save_npy  # noqa: E402
from conftest import blender_benchmark, load_script  # noqa: E402

pytestmark = pytest.mark.skipif(not BLEND.exists(), reason=f"no {BLEND} (cd blender && python build_zebra.py)")
HAS_BLENDER = shutil.which("blender") is not None


bench = blender_benchmark()


@pytest.fixture(scope="module")
def poses(tmp_path_factory):
    path = tmp_path_factory.mktemp("poses") / "poses.npy"
    save_npy(path, bench.synthetic_poses(300))
    return path


def command(out, poses, *flags, blender=False, n=6, size=16, image_dir=None):
    args = [f"--n_frames={n}", f"--height={size}", f"--width={size}", f"--poses={poses}",
            f"--image_dir={image_dir or out / 'img'}", f"--label_dir={out}", *flags]
    if blender:
        return ["blender", "-b", str(BLEND), "--python-exit-code", "1", "-P", "animation_script.py", "--", *args]
    return [sys.executable, "animation_script.py", "--", f"--blend={BLEND}", *args]


def render(out, poses, *flags, **kw):
    cmd = command(out, poses, *flags, **kw)
    return subprocess.run(cmd, cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR), capture_output=True,
                          text=True, timeout=600)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def one_line(proc, start, *words, code=2):
    """The run failed with exactly one `start...` line naming `words`, and no traceback."""
    lines = [l for l in proc.stderr.splitlines() if l.startswith(start)]
    assert proc.returncode == code and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr[-3000:]
    return lines[0]


def sha1s(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.png"))}


def label_bytes(out):
    return [(out / n).read_bytes() for n in manifest.LABEL_NAMES]


def assert_consistent(out, image_dir=None):
    """The labels verify against the manifest, every frame against the labels, and no stray frame."""
    manifest.check_images(out / "annotations.json", image_dir or out / "img", all_frames=True)


def interrupt(out, poses, sig, *flags, frames_first=2, **kw):
    """Start a render, send `sig` once it has written `frames_first` frames, wait; the CompletedProcess."""
    img = kw.get("image_dir") or out / "img"
    cmd = command(out, poses, *flags, **kw)
    t0 = time.time_ns()
    p = subprocess.Popen(cmd, cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)

    def new():  # frames written by this run (the old ones may vanish while we look: a clean start)
        with contextlib.suppress(FileNotFoundError):
            return sum(1 for f in img.glob("zebra_synth_*.png") if f.stat().st_mtime_ns >= t0)
        return 0
    deadline = time.time() + 300
    while new() < frames_first and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)


# ------------------------------------------------------------------ same seed, same bytes

@pytest.mark.slow
def test_same_seed_gives_byte_identical_pngs_and_labels(tmp_path, poses):
    ok(render(tmp_path / "a", poses))
    ok(render(tmp_path / "b", poses))
    first, second = sha1s(tmp_path / "a" / "img"), sha1s(tmp_path / "b" / "img")
    assert len(first) == 6 and first == second
    assert label_bytes(tmp_path / "a") == label_bytes(tmp_path / "b")
    from PIL import Image
    im = Image.open(tmp_path / "a" / "img" / shards.image_name(0, 6))
    im.load()
    assert not getattr(im, "text", {}) and not any("time" in k or "date" in k or "File" in k for k in im.info)


# ------------------------------------------------------------------ images and labels belong together

@pytest.mark.slow
def test_a_rerun_with_another_seed_starts_clean_and_says_so(tmp_path, poses):
    ok(render(tmp_path, poses, n=8))
    old = manifest.read_manifest(tmp_path)["job_id"]
    proc = ok(render(tmp_path, poses, "--seed=7", n=5))  # fewer frames: the old 5..7 must go too
    notes = [l for l in proc.stderr.splitlines() if "clean" in l]
    assert len(notes) == 1 and old in notes[0] and "8 frames" in notes[0], proc.stderr
    assert sorted(sha1s(tmp_path / "img")) == sorted(sha1s(tmp_path / "img_shadows")) == \
        [shards.image_name(i, 5) for i in range(5)]
    new = manifest.read_manifest(tmp_path)
    assert new["job_id"] != old and json.loads((tmp_path / "annotations.json").read_text())["info"]["job"]["seed"] == 7
    assert_consistent(tmp_path)
    # the same command again: nothing to render, the same bytes
    before = label_bytes(tmp_path), sha1s(tmp_path / "img")
    again = ok(render(tmp_path, poses, "--seed=7", n=5))
    assert "5 frames already done" in again.stdout and "clean" not in again.stderr
    assert (label_bytes(tmp_path), sha1s(tmp_path / "img")) == before


@pytest.mark.slow
def test_label_settings_belong_to_the_job(tmp_path, poses):
    """BODY_RANGES and HIDDEN_DEPTH shape the labels: a copy of the script with another value is another job."""
    ok(render(tmp_path, poses, n=3))
    copy = tmp_path / "copy"  # the script edited as a researcher would, in a copy of the code
    shutil.copytree(REPO / "pasyn", copy / "pasyn")
    text = (BLENDER_DIR / "animation_script.py").read_text()
    assert "HIDDEN_DEPTH = 0.15 " in text
    (copy / "blender").mkdir()
    for module in BLENDER_DIR.glob("*.py"):  # the script and the modules beside it
        shutil.copy(module, copy / "blender" / module.name)
    (copy / "blender" / "animation_script.py").write_text(text.replace("HIDDEN_DEPTH = 0.15 ", "HIDDEN_DEPTH = 0.30 "))
    proc = ok(subprocess.run(command(tmp_path, poses, n=3), cwd=copy / "blender", capture_output=True, text=True,
                             env=bench.blender_env(copy / "blender"), timeout=600))
    assert "clean" in proc.stderr and "already done" not in proc.stdout
    job = json.loads((tmp_path / "annotations.json").read_text())["info"]["job"]
    assert job["hidden_depth"] == 0.30 and job["body_ranges"]["neck"] == [[-15, 35], [-5, 5], [-20, 20]]


@pytest.mark.slow
def test_readers_refuse_images_that_do_not_belong_to_the_labels(tmp_path, poses):
    ok(render(tmp_path / "a", poses, n=4))
    ok(render(tmp_path / "b", poses, "--seed=7", n=4))
    a = tmp_path / "a"
    assert_consistent(a)
    # a frame of the other job among ours
    name = shards.image_name(2, 4)
    good = (a / "img" / name).read_bytes()
    shutil.copy(tmp_path / "b" / "img" / name, a / "img" / name)
    with pytest.raises(UserError, match=r"1 of 4 images .* do not belong .*zebra_synth_00002.png.*re-run step 3"):
        manifest.check_images(a / "annotations.json", a / "img")
    (a / "img" / name).write_bytes(good)
    assert_consistent(a)
    # a shadow of the other job: step 5 casts shadows from them too
    shutil.copy(tmp_path / "b" / "img_shadows" / name, a / "img_shadows" / name)
    manifest.check_images(a / "annotations.json", a / "img")
    with pytest.raises(UserError, match=r"1 of 4 images .*or their shadows.* do not belong"):
        manifest.check_images(a / "annotations.json", a / "img", shadow_dir=a / "img_shadows")
    # a label file of the other job (a crash between the renames of two label files)
    shutil.copy(tmp_path / "b" / "blender_gt.npy", a / "blender_gt.npy")
    with pytest.raises(UserError, match="blender_gt.npy does not belong to render_manifest.json.*step 3"):
        manifest.check_images(a / "annotations.json", a / "img")
    (a / "render_manifest.json").unlink()
    with pytest.raises(UserError, match="no render_manifest.json"):
        manifest.check_images(a / "annotations.json", a / "img")
    # a stray frame left by a longer run, for a reader that takes the whole folder
    b = tmp_path / "b"
    shutil.copy(b / "img" / shards.image_name(0, 4), b / "img" / "zebra_synth_00009.png")
    manifest.check_images(b / "annotations.json", b / "img")
    with pytest.raises(UserError, match="1 images .* are not in"):
        manifest.check_images(b / "annotations.json", b / "img", all_frames=True)


@pytest.mark.slow
def test_merge_refuses_a_frame_overwritten_by_another_run_and_removes_stray_frames(tmp_path, poses):
    ok(render(tmp_path, poses, "--frame_end=3", n=6))
    ok(render(tmp_path, poses, "--frame_start=3", n=6))
    other = tmp_path / "other"
    ok(render(other, poses, "--seed=3", n=8))
    name = shards.image_name(4, 6)
    good = (tmp_path / "img" / name).read_bytes()
    shutil.copy(other / "img" / name, tmp_path / "img" / name)
    merge = [sys.executable, "merge_shards.py", f"--label_dir={tmp_path}"]
    proc = subprocess.run(merge, cwd=BLENDER_DIR, capture_output=True, text=True)
    one_line(proc, "error:", "1 frames", name, "re-render")
    assert not (tmp_path / "annotations.json").exists()
    (tmp_path / "img" / name).write_bytes(good)
    shutil.copy(other / "img" / shards.image_name(7, 8), tmp_path / "img" / shards.image_name(7, 8))
    proc = ok(subprocess.run(merge, cwd=BLENDER_DIR, capture_output=True, text=True))
    assert "removed 1 frames" in proc.stdout and len(sha1s(tmp_path / "img")) == 6
    assert_consistent(tmp_path)


# ------------------------------------------------------------------ Ctrl-C and SIGTERM

@pytest.mark.slow
def test_ctrl_c_stops_within_a_frame_and_the_same_command_resumes_to_the_same_bytes(tmp_path, poses):
    flags = ("--samples=16",)
    ok(render(tmp_path / "straight", poses, *flags, n=30, size=64))
    out = tmp_path / "stopped"
    proc = interrupt(out, poses, signal.SIGINT, *flags, n=30, size=64)
    line = one_line(proc, "interrupted:", "SIGINT", "run the same command again to resume", code=130)
    shard = shards.load_shard(out / "shards" / "frames_00000_00030.npz")
    done = int(shard["done"].sum())
    assert f"{done} of 30 frames done" in line and 0 < done < 30, line
    on_disk = sha1s(out / "img")
    assert len(on_disk) == done and not list((out / "img").glob(".*"))  # no half-written frame
    for k in np.flatnonzero(shard["done"]):
        assert on_disk[shards.image_name(k, 30)] == shard["sha1"][k]
    assert not (out / "annotations.json").exists()
    again = ok(render(out, poses, *flags, n=30, size=64))
    assert f"{done} frames already done" in again.stdout
    assert label_bytes(out) == label_bytes(tmp_path / "straight")
    assert sha1s(out / "img") == sha1s(tmp_path / "straight" / "img")
    assert not (out / "shards" / "frames_00000_00030.npz").exists()


@pytest.mark.slow
def test_the_issue_scenario_stylize_refuses_after_an_interrupted_rerender(tmp_path, poses):
    """Finish 60 frames, re-render with --seed=7 and Ctrl-C it: step 5 must not take the mixed set."""
    ok(render(tmp_path, poses, n=60, size=32))
    proc = interrupt(tmp_path, poses, signal.SIGINT, "--seed=7", n=60, size=32)
    assert proc.returncode == 130 and sum("clean" in l for l in proc.stderr.splitlines()) == 1, proc.stderr
    checkpoint = tiny_style_checkpoint(tmp_path / "st", 32)
    cmd = [sys.executable, "stylize.py", "--height=32", "--width=32", f"--checkpoint={checkpoint}",
           f"--frames_dir={tmp_path / 'img'}", f"--annotations={tmp_path / 'annotations.json'}",
           f"--backgrounds={tmp_path / 'st' / 'data' / 'style'}", f"--out_dir={tmp_path / 'stylized'}"]
    styl = subprocess.run(cmd, cwd=REPO / "style_transfer", capture_output=True, text=True, timeout=600)
    one_line(styl, "error:", "annotations.json", "step 3")
    assert not (tmp_path / "stylized").exists()
    # finish the seed-7 job: now step 5 takes it, and every stylized label is the render's
    ok(render(tmp_path, poses, "--seed=7", n=60, size=32))
    ok(subprocess.run(cmd, cwd=REPO / "style_transfer", capture_output=True, text=True, timeout=600))
    styled = json.loads((tmp_path / "stylized" / "annotations.json").read_text())
    assert styled["annotations"] == json.loads((tmp_path / "annotations.json").read_text())["annotations"]


def tiny_style_checkpoint(root, size):
    """A one-epoch AdaIN checkpoint at size x size (random-init VGG), trained by step 4 itself."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for folder in ("content", "style"):
        (root / "data" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(root / "data" / folder / f"{i}.png")
    cmd = [sys.executable, "train.py", f"--height={size}", f"--width={size}", "--epochs=1", "--batch_size=4",
           "--vgg_weights=none", f"--data_dir={root / 'data'}", "--content_dir=content", "--style_dir=style",
           f"--checkpoint={root / 'checkpoint.pt'}"]
    ok(subprocess.run(cmd, cwd=REPO / "style_transfer", capture_output=True, text=True, timeout=600))
    return root / "checkpoint.pt"


def test_run_main_turns_sigterm_and_a_full_disk_into_one_line(tmp_path):
    script = tmp_path / "long.py"
    script.write_text(f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\nfrom pasyn.files import run_main\n"
                      "def main(argv):\n    print('started', flush=True)\n    time.sleep(60)\nrun_main(main)\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "started\n"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    one_line(subprocess.CompletedProcess([], p.returncode, "", err), "terminated (SIGTERM)", code=130)
    with tiny_filesystem(tmp_path / "full", "size=16k") as full:
        script.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom pasyn.files import run_main, save_npy\n"
                          f"run_main(lambda argv: save_npy({str(full / 'big.npy')!r}, bytes(100000)))\n")
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        one_line(proc, "error:", "big.npy", "No space left", code=1)
        assert list(full.iterdir()) == []  # the temp file is gone too


# ------------------------------------------------------------------ one line for every failure

def test_flags_before_the_double_dash_are_refused_with_the_right_form(tmp_path):
    proc = subprocess.run([sys.executable, "animation_script.py", "--n_frames=10", "--height=64", "--width=64"],
                          cwd=BLENDER_DIR, capture_output=True, text=True)
    one_line(proc, "error:", "python animation_script.py -- --n_frames=10 --height=64 --width=64")


# Every script with a seed flag, and what it needs besides to reach its flag checks.
SEED_SCRIPTS = {
    "VAE/train.py": ["--seed=-1"],
    "VAE/generate.py": ["--seed=-1"],
    "VAE/make_pose_data.py": ["--seed=-1"],
    "VAE/evaluate.py": ["--seeds", "0", "-1"],
    "blender/animation_script.py": ["--seed=-1"],
    "style_transfer/train.py": ["--seed=-1"],
    "style_transfer/stylize.py": ["--seed=-1"],
    "style_transfer/make_backgrounds.py": ["--seed=-1", "--out_dir", "{tmp}/out"],
    "pose_net/train.py": ["--seed=-1"],
    "pose_net/ablate.py": ["--seeds", "-1", "--real", "{tmp}/real.json", "{tmp}"],
    "pose_net/recipe.py": ["--seeds", "-1", "--real", "{tmp}/real.json", "{tmp}"],
    "export/export.py": ["--seed=-1", "--to", "coco", "--out", "{tmp}/out"],
}


@pytest.mark.parametrize("script", sorted(SEED_SCRIPTS))
def test_every_script_refuses_a_negative_seed_in_one_line(script, tmp_path, capsys, monkeypatch):
    if script.startswith("blender/"):
        pytest.importorskip("bpy")
    from pasyn.files import run_main
    monkeypatch.syspath_prepend(str((REPO / script).parent))
    (tmp_path / "real.json").write_text("{}")
    argv = [a.format(tmp=tmp_path) for a in SEED_SCRIPTS[script]]
    module = load_script(script)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        run_main(module.main, argv)
    err = capsys.readouterr().err
    flag = "--seeds" if "--seeds" in argv else "--seed"
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {flag} must be between 0 and ") and err.endswith("(got -1)\n"), err
    assert sorted(tmp_path.rglob("*")) == before


@contextlib.contextmanager
def tiny_filesystem(path, options):
    """A real tmpfs (`mount -t tmpfs -o OPTIONS`), unmounted afterwards; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_folder(path):
    """A folder this process cannot write in: chmod for a normal user, a read-only tmpfs for root."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with tiny_filesystem(path, "size=64k,ro") as p:
            yield p


@pytest.mark.slow
@pytest.mark.parametrize("which", ["image_dir", "label_dir"])
def test_a_read_only_output_folder_is_one_line_and_nothing_is_touched(tmp_path, poses, which):
    ok(render(tmp_path, poses, n=3))
    before = label_bytes(tmp_path), sha1s(tmp_path / "img")
    with read_only_folder(tmp_path / "ro") as ro:
        if which == "image_dir":
            proc = render(tmp_path, poses, "--seed=5", n=3, image_dir=ro / "img")
        else:
            proc = render(ro, poses, "--seed=5", n=3, image_dir=tmp_path / "img")
        one_line(proc, "error:", "cannot write in", str(ro))
    assert (label_bytes(tmp_path), sha1s(tmp_path / "img")) == before
    assert_consistent(tmp_path)


@pytest.mark.slow
def test_a_disk_that_fills_up_while_rendering_is_one_line_and_keeps_good_frames(tmp_path, poses):
    with tiny_filesystem(tmp_path / "full", "size=96k") as full:
        proc = render(tmp_path, poses, n=200, size=64, image_dir=full)
        line = one_line(proc, "error:", "could not write", "free space")
        shard = shards.load_shard(tmp_path / "shards" / "frames_00000_00200.npz")
        on_disk = sha1s(full)
        assert 0 < shard["done"].sum() == len(on_disk) < 200, line
        for k in np.flatnonzero(shard["done"]):  # every kept frame is whole and is the one its label describes
            assert on_disk[shards.image_name(k, 200)] == shard["sha1"][k]
        from PIL import Image
        for name in on_disk:
            Image.open(full / name).load()
        assert not (tmp_path / "annotations.json").exists()


@pytest.mark.slow
def test_a_full_disk_while_the_labels_are_written_keeps_the_old_set(tmp_path, poses):
    """merge_shards.py writes a new job's labels onto a disk with no room: the old set stays whole."""
    with tiny_filesystem(tmp_path / "labels", "size=128k") as labels:
        ok(render(labels, poses, n=6, image_dir=tmp_path / "img"))
        old = label_bytes(labels)
        ok(render(tmp_path / "new", poses, "--seed=9", "--frame_end=6", n=12, image_dir=tmp_path / "img"))
        ok(render(tmp_path / "new", poses, "--seed=9", "--frame_start=6", n=12, image_dir=tmp_path / "img"))
        shutil.copytree(tmp_path / "new" / "shards", labels / "shards", dirs_exist_ok=True)
        free = shutil.disk_usage(labels).free
        (labels / "filler").write_bytes(bytes(max(free - 8192, 0)))
        proc = subprocess.run([sys.executable, "merge_shards.py", f"--label_dir={labels}"], cwd=BLENDER_DIR,
                              capture_output=True, text=True)
        one_line(proc, "error:", "No space left", code=1)
        assert label_bytes(labels) == old and not [p for p in labels.iterdir() if p.name.startswith(".")]
        manifest.check_labels(labels)  # the old set still verifies


# ------------------------------------------------------------------ Debian's Blender

@pytest.mark.slow
@pytest.mark.skipif(not HAS_BLENDER, reason="no Blender executable")
def test_debian_blender_stops_on_sigterm_refuses_flags_without_dashes_and_repeats_bytes(tmp_path, poses):
    proc = interrupt(tmp_path / "stopped", poses, signal.SIGTERM, "--samples=16", n=30, size=64, blender=True)
    line = one_line(proc, "interrupted:", "SIGTERM", "resume", code=130)
    shard = shards.load_shard(tmp_path / "stopped" / "shards" / "frames_00000_00030.npz")
    assert f"{int(shard['done'].sum())} of 30" in line and len(sha1s(tmp_path / "stopped" / "img")) == shard["done"].sum()
    bad = subprocess.run(["blender", "-b", str(BLEND), "--python-exit-code", "1", "-P", "animation_script.py",
                          "--n_frames=10"], cwd=BLENDER_DIR, env=bench.blender_env(BLENDER_DIR),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr + bad.stdout
    assert "-P animation_script.py -- --n_frames=10" in bad.stderr
    ok(render(tmp_path / "a", poses, blender=True))
    ok(render(tmp_path / "b", poses, blender=True))
    assert sha1s(tmp_path / "a" / "img") == sha1s(tmp_path / "b" / "img")
    assert label_bytes(tmp_path / "a") == label_bytes(tmp_path / "b")
    assert_consistent(tmp_path / "a")


@pytest.mark.slow
def test_step_4_refuses_renders_that_do_not_belong_to_step_3s_labels(tmp_path, poses):
    """In a copy of the code (step 4 checks its default content, the renders of step 3, at their fixed paths)."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "pasyn", copy / "pasyn")
    for stage in ("blender", "style_transfer"):
        (copy / stage).mkdir()
        for module in (REPO / stage).glob("*.py"):
            shutil.copy(module, copy / stage / module.name)
    ok(subprocess.run([sys.executable, "animation_script.py", "--", f"--blend={BLEND}", f"--poses={poses}",
                       "--n_frames=4", "--height=16", "--width=16"], cwd=copy / "blender",
                      env=bench.blender_env(copy / "blender"), capture_output=True, text=True, timeout=600))
    frames = copy / "style_transfer" / "data" / "synthetic_images" / "zebra"
    assert len(sha1s(frames)) == 4
    from PIL import Image
    (copy / "style_transfer" / "data" / "style").mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 120, 60)).save(copy / "style_transfer" / "data" / "style" / f"{i}.png")
    train = [sys.executable, "train.py", "--height=16", "--width=16", "--epochs=1", "--batch_size=4",
             "--vgg_weights=none", "--style_dir=style"]
    shutil.copy(frames / shards.image_name(0, 4), frames / "zebra_synth_00009.png")  # left by a longer run
    proc = subprocess.run(train, cwd=copy / "style_transfer", capture_output=True, text=True, timeout=600)
    one_line(proc, "error:", "1 images", "zebra_synth_00009.png", "are not in", "step 3")
    assert not (copy / "style_transfer" / "checkpoint.pt").exists()
    (frames / "zebra_synth_00009.png").unlink()
    ok(subprocess.run(train, cwd=copy / "style_transfer", capture_output=True, text=True, timeout=600))
