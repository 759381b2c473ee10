"""VAE stage: pose data maker, vposer.py, train.py, generate.py, evaluate.py (tiny, real runs)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "VAE"))
sys.path.insert(0, str(REPO))

import evaluate  # noqa: E402
import generate  # noqa: E402
from pasyn import angles  # noqa: E402
import make_pose_data  # noqa: E402
import train  # noqa: E402
import vae_io  # noqa: E402
from pasyn.files import UserError  # noqa: E402
from vposer import (ChordSquared, VPoser, geodesic_degrees, matrices_from_poses, matrices_from_sixd,  # noqa: E402
                    poses_from_matrices, sixd_from_matrices, smooth_noise)

TINY = ["--hidden", "16", "12", "--latent_dim", "4", "--batch_size", "32", "--prior_components", "2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Tiny splits made by the real data maker: 128 / 32 / 32 poses."""
    d = tmp_path_factory.mktemp("data")
    make_pose_data.main(["--clips", "16", "4", "4", "--frames_per_clip", "8", "--out_dir", str(d)])
    return d


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A tiny model trained for 3 epochs: (checkpoint path, train.main's result)."""
    ckpt = tmp_path_factory.mktemp("run") / "checkpoint.pt"
    result = train.main(["--epochs", "3", "--data_dir", str(data_dir), "--checkpoint", str(ckpt), *TINY])
    return ckpt, result


def train_args(data_dir, ckpt, epochs, *extra):
    return ["--epochs", str(epochs), "--data_dir", str(data_dir), "--checkpoint", str(ckpt), *TINY, *extra]


def write_poses(path, poses):
    np.savez(path, poses=poses)


# --- angle convention ---------------------------------------------------------------------

def test_angle_round_trip_keeps_rotations_and_wraps_at_180():
    rng = np.random.default_rng(0)
    poses = rng.uniform(-180, 180, (50, 36))
    poses[0, :3] = [180.0, 0.0, -179.999]   # on the wrap
    poses[1, :3] = [-179.5, 89.999, 179.5]  # near gimbal lock: angles not unique, the rotation is
    R = matrices_from_poses(poses)
    back = poses_from_matrices(R)
    assert np.all(back > -180.0) and np.all(back <= 180.0)
    assert torch.allclose(matrices_from_poses(back), R, atol=1e-5)
    assert torch.allclose(matrices_from_sixd(sixd_from_matrices(R)), R, atol=1e-5)
    # -179.5 and 179.5 are 1 degree apart, so the network's input barely moves.
    a, b = np.zeros((1, 36)), np.zeros((1, 36))
    a[0, 0], b[0, 0] = -179.5, 179.5
    Ra, Rb = matrices_from_poses(a), matrices_from_poses(b)
    assert geodesic_degrees(Ra, Rb).max() == pytest.approx(1.0, abs=1e-3)
    assert torch.dist(sixd_from_matrices(Ra), sixd_from_matrices(Rb)) < 0.03


def test_hand_written_reconstruction_gradient_matches_autograd():
    torch.manual_seed(0)
    R = matrices_from_poses(np.random.default_rng(1).uniform(-180, 180, (6, 36))).double()
    x = torch.randn(6, 72, dtype=torch.float64, requires_grad=True)
    plain = (matrices_from_sixd(x) - R).pow(2).sum((-1, -2))
    assert torch.allclose(ChordSquared.apply(x, R), plain)
    weights = torch.rand(6, 12, dtype=torch.float64)
    grad_plain, = torch.autograd.grad((plain * weights).sum(), x)
    grad_hand, = torch.autograd.grad((ChordSquared.apply(x, R) * weights).sum(), x)
    assert torch.allclose(grad_hand, grad_plain, atol=1e-10)
    assert torch.autograd.gradcheck(ChordSquared.apply, (x[:2].detach().requires_grad_(), R[:2]))


# --- data maker ---------------------------------------------------------------------------

def test_data_maker_reproduces_committed_files_bit_for_bit(tmp_path):
    make_pose_data.main(["--out_dir", str(tmp_path)])
    for split in ("train", "val", "test"):
        name = f"{split}_poses_refine.npz"
        assert (tmp_path / name).read_bytes() == (REPO / "VAE" / "data" / name).read_bytes(), name


def test_committed_data_is_finite_wrapped_and_split_by_clip():
    splits = {s: vae_io.load_pose_file(REPO / "VAE" / "data" / f"{s}_poses_refine.npz", 36)
              for s in ("train", "val", "test")}
    for poses in splits.values():
        assert np.all(poses > -180.0) and np.all(poses <= 180.0)
    # No test pose is a near-twin of a training pose (separate clips, separate individuals).
    train_f = evaluate.rotation_features(splits["train"])
    test_f = evaluate.rotation_features(splits["test"])
    assert evaluate.near_copy_share(test_f, train_f, copy_deg=0.5) == 0.0


# --- train.py -----------------------------------------------------------------------------

def test_loss_goes_down_in_a_few_epochs(trained):
    ckpt_path, result = trained
    assert result["train_losses"][-1] < result["train_losses"][0]
    assert result["val_losses"][-1] < result["val_losses"][0]
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["epoch"] == 3 and all(type(x) is float for x in ckpt["train_losses"] + ckpt["val_losses"])
    assert set(ckpt) >= {"epoch", "model_state_dict", "optimizer_state_dict", "train_losses", "val_losses", "config"}
    assert (ckpt_path.parent / "losses.jpg").stat().st_size > 0


def test_resume_continues_exactly_where_training_stopped(data_dir, tmp_path):
    straight, resumed = tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt"
    train.main(train_args(data_dir, straight, 4))
    train.main(train_args(data_dir, resumed, 2))
    train.main(train_args(data_dir, resumed, 4))
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert b["epoch"] == 4 and a["train_losses"] == b["train_losses"]
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key


def test_resume_with_other_flags_is_one_clear_error_and_restart_starts_over(data_dir, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    train.main(train_args(data_dir, ckpt, 1))
    before = ckpt.read_bytes()
    with pytest.raises(UserError, match=r"lr=0.001 \(now 0.01\).*--restart"):
        train.main(train_args(data_dir, ckpt, 2, "--lr", "0.01"))
    assert ckpt.read_bytes() == before
    train.main(train_args(data_dir, ckpt, 1, "--lr", "0.01", "--restart"))
    assert torch.load(ckpt, weights_only=True)["config"]["train"]["lr"] == 0.01


def test_training_data_changed_since_the_checkpoint_does_not_resume(data_dir, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    train.main(train_args(data_dir, ckpt, 1))
    for split in ("train", "val", "test"):
        poses = np.load(data_dir / f"{split}_poses_refine.npz")["poses"]
        write_poses(tmp_path / f"{split}_poses_refine.npz", poses[:-1] if split == "train" else poses)
    with pytest.raises(UserError, match=r"train_data=.*--restart"):
        train.main(train_args(tmp_path, ckpt, 2))


def test_missing_data_file_names_the_file_and_the_step_that_makes_it(data_dir, tmp_path):
    (tmp_path / "train_poses_refine.npz").write_bytes((data_dir / "train_poses_refine.npz").read_bytes())
    with pytest.raises(UserError, match=r"val_poses_refine.npz.*make_pose_data.py"):
        train.main(train_args(tmp_path, tmp_path / "checkpoint.pt", 1))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 36)), r"shape \(10, 36\), expected \(N, 39\)"),
    (np.where(np.arange(390).reshape(10, 39) == 50, np.nan, 1.0), r"NaN/inf in 1 rows \(first: row 1\)"),
])
def test_bad_pose_file_is_one_clear_error(data_dir, tmp_path, bad, message):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_poses_refine.npz").write_bytes((data_dir / f"{split}_poses_refine.npz").read_bytes())
    write_poses(tmp_path / "val_poses_refine.npz", bad)
    with pytest.raises(UserError, match=message):
        train.main(train_args(tmp_path, tmp_path / "checkpoint.pt", 1))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_original_pasyn_float64_files_train_unchanged(data_dir, tmp_path):
    for split in ("train", "val", "test"):
        poses = np.load(data_dir / f"{split}_poses_refine.npz")["poses"].astype(np.float64)
        write_poses(tmp_path / f"{split}_poses_refine.npz", poses)  # plain np.savez, as PASyn's
    result = train.main(train_args(tmp_path, tmp_path / "checkpoint.pt", 1))
    assert np.isfinite(result["test_error_deg"])


def test_interrupted_save_leaves_the_old_checkpoint_intact(trained, monkeypatch):
    ckpt_path, _ = trained
    before = ckpt_path.read_bytes()

    def save_half_then_crash(obj, f):
        Path(f).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(vae_io.torch, "save", save_half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        vae_io.save_checkpoint(ckpt_path, {"epoch": 99})
    assert ckpt_path.read_bytes() == before
    assert sorted(p.name for p in ckpt_path.parent.iterdir()) == ["checkpoint.pt", "losses.jpg"]


# --- generate.py --------------------------------------------------------------------------

def test_generate_writes_float32_poses_in_range_deterministically(trained, tmp_path):
    ckpt, _ = trained
    runs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        out = tmp_path / f"{name}.npy"
        generate.main(["--n_frames", "50", "--seed", str(seed), "--checkpoint", str(ckpt), "--out", str(out)])
        runs[name] = out
    poses = np.load(runs["a"])
    assert poses.shape == (50, 36) and poses.dtype == np.float32
    assert np.all(poses > -180.0) and np.all(poses <= 180.0)
    assert runs["a"].read_bytes() == runs["b"].read_bytes()
    assert not np.array_equal(poses, np.load(runs["c"]))


def test_trajectory_mode_moves_less_per_frame_than_independent_samples(trained, tmp_path):
    model, _ = vae_io.load_model(trained[0])
    steps = {}
    for smoothness in (0.0, 3.0):
        R = matrices_from_poses(model.sample_poses(400, seed=0, smoothness=smoothness))
        steps[smoothness] = geodesic_degrees(R[1:], R[:-1]).mean()
    assert steps[3.0] < 0.5 * steps[0.0]


def test_reconstruct_mode_cycles_through_the_given_poses(trained, data_dir, tmp_path):
    out = tmp_path / "poses.npy"
    poses = generate.main(["--mode", "reconstruct", "--poses", str(data_dir / "test_poses_refine.npz"),
                           "--n_frames", "40", "--checkpoint", str(trained[0]), "--out", str(out)])
    assert poses.shape == (40, 36)
    assert np.array_equal(poses[:8], poses[32:40])  # 32 test poses, then from the start again


def test_generate_checks_its_inputs_with_one_line_and_exit_2(trained, tmp_path):
    proc = subprocess.run([sys.executable, "generate.py", "--n_frames", "0"], cwd=REPO / "VAE",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --n_frames must be at least 1 (got 0)"
    with pytest.raises(UserError, match="missing .*nothere.pt"):
        generate.main(["--checkpoint", str(tmp_path / "nothere.pt"), "--out", str(tmp_path / "x.npy")])


def test_checkpoint_of_another_architecture_is_one_clear_error(trained, tmp_path):
    ckpt = torch.load(trained[0], weights_only=True)
    ckpt["model_state_dict"] = VPoser(hidden=(8,), latent_dim=3).state_dict()  # config says 16, 12 / 4
    torch.save(ckpt, tmp_path / "other.pt")
    torch.save({"decoder": {}}, tmp_path / "foreign.pt")
    out = tmp_path / "poses.npy"
    with pytest.raises(UserError, match="another architecture"):
        generate.main(["--checkpoint", str(tmp_path / "other.pt"), "--out", str(out)])
    with pytest.raises(UserError, match="not a checkpoint of this VAE"):
        generate.main(["--checkpoint", str(tmp_path / "foreign.pt"), "--out", str(out)])
    assert not out.exists()


# --- evaluate.py --------------------------------------------------------------------------

def test_precision_recall_separate_matching_from_disjoint_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 5))
    assert evaluate.precision_recall(real, real, k=3) == (1.0, 1.0)
    assert evaluate.precision_recall(real + 100.0, real, k=3) == (0.0, 0.0)
    collapsed = real[:5] * 0.01  # a generator stuck near one mode: realistic but not varied
    precision, recall = evaluate.precision_recall(collapsed, real, k=3)
    assert precision == 1.0 and recall < 0.2


def test_evaluate_reports_figures_and_draws_the_pose_plot(trained, data_dir, tmp_path):
    plot = tmp_path / "pose_plot.png"
    results = evaluate.main(["--checkpoint", str(trained[0]), "--data", str(data_dir), "--plot", str(plot),
                             "--n_samples", "200", "--seeds", "0", "1"])
    assert set(results) == {"sampled, seed 0", "sampled, seed 1", "validation (ceiling)"}
    for r in results.values():
        assert set(r) == {"precision", "recall", "near_copies", "legs_hanging"}
        assert all(0.0 <= v <= 1.0 for v in r.values())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- pose conventions (issue 10) ------------------------------------------------------------

@pytest.fixture(scope="module")
def pasyn_dir(tmp_path_factory):
    """A tiny stand-in of PASyn's published files: PASyn's convention, only the key `poses`."""
    d = tmp_path_factory.mktemp("pasyn")
    make_pose_data.main(["--convention", "pasyn", "--clips", "16", "4", "4", "--frames_per_clip", "8",
                         "--out_dir", str(d)])
    return d


@pytest.fixture(scope="module")
def pasyn_trained(pasyn_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("pasyn_run") / "checkpoint.pt"
    result = train.main(["--epochs", "2", "--data", str(pasyn_dir), "--checkpoint", str(ckpt), *TINY])
    return ckpt, result


def test_pose_files_carry_or_reveal_their_convention(data_dir, pasyn_dir, tmp_path):
    with np.load(data_dir / "train_poses_refine.npz") as f:
        assert str(f["convention"]) == "pasyn2"
    with np.load(pasyn_dir / "train_poses_refine.npz") as f:
        assert f.files == ["poses"] and f["poses"].dtype == np.float64  # as PASyn publishes them
    assert vae_io.load_pose_splits(data_dir, 36)[1:] == ("pasyn2", "tagged in the files")
    _, convention, how = vae_io.load_pose_splits(pasyn_dir, 36)
    assert convention == "pasyn" and how.startswith("untagged")
    # our poses without the tag are still recognised as ours; the flag overrides everything
    for split in ("train", "val", "test"):
        write_poses(tmp_path / f"{split}_poses_refine.npz", np.load(data_dir / f"{split}_poses_refine.npz")["poses"])
    assert vae_io.load_pose_splits(tmp_path, 36)[1] == "pasyn2"
    assert vae_io.load_pose_splits(tmp_path, 36, "pasyn")[1:] == ("pasyn", "--convention")


def test_a_prior_trained_on_pasyn_files_writes_pasyn_poses_and_says_so(pasyn_trained, tmp_path):
    ckpt, result = pasyn_trained
    assert result["convention"] == "pasyn"
    out = tmp_path / "my_vae_poses.npy"
    poses = generate.main(["--n_frames", "30", "--checkpoint", str(ckpt), "--out", str(out)])
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["convention"] == "pasyn"
    assert side["poses_sha1"] == hashlib.sha1(out.read_bytes()).hexdigest()
    assert angles.pose_file_convention(out) == "pasyn"
    # written as PASyn's convention (y and z kept, not re-derived through our rig), and they
    # pose our rig with hanging legs once converted, as step 3 does
    assert np.abs(poses[:, 1::3]).mean() > 3.0
    assert angles.guess_convention(poses)[0] == "pasyn"
    assert angles.legs_hanging(angles.to_ours(poses, "pasyn")).mean() >= 0.9


def test_generate_writes_a_sidecar_for_our_convention_too(trained, tmp_path):
    out = tmp_path / "poses.npy"
    generate.main(["--n_frames", "5", "--checkpoint", str(trained[0]), "--out", str(out)])
    assert json.loads(out.with_suffix(".json").read_text())["convention"] == "pasyn2"


def test_uniform_mode_draws_every_angle_within_the_training_range(trained, data_dir, tmp_path):
    out = tmp_path / "uniform.npy"
    poses = generate.main(["--mode", "uniform", "--n_frames", "400", "--checkpoint", str(trained[0]),
                           "--out", str(out), "--seed", "3"])
    train_poses = vae_io.load_pose_file(data_dir / "train_poses_refine.npz", 36)
    assert poses.shape == (400, 36) and poses.dtype == np.float32
    assert np.all(poses >= train_poses.min(0) - 1e-3) and np.all(poses <= train_poses.max(0) + 1e-3)
    # spread over the whole range, not bunched like the data
    assert np.all(poses.std(0) > 0.25 * (train_poses.max(0) - train_poses.min(0)))
    assert json.loads(out.with_suffix(".json").read_text())["mode"] == "uniform"


def test_evaluate_scores_any_folder_and_refuses_a_convention_mismatch(pasyn_trained, pasyn_dir, data_dir, tmp_path):
    results = evaluate.main(["--checkpoint", str(pasyn_trained[0]), "--data", str(pasyn_dir), "--n_samples", "100",
                             "--plot", str(tmp_path / "plot.png")])
    assert results["validation (ceiling)"]["legs_hanging"] > 0.9  # PASyn poses drawn on our rig: legs hang
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="pasyn convention but .* pasyn2"):
        evaluate.main(["--checkpoint", str(pasyn_trained[0]), "--data", str(data_dir), "--n_samples", "20",
                       "--plot", str(tmp_path / "plot.png")])


# --- one line instead of a traceback (issue 12) ----------------------------------------------

def run_script(script, *args, timeout=300):
    return subprocess.run([sys.executable, script, *args], cwd=REPO / "VAE", capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("script, args, message", [
    ("generate.py", ["--seed=-1"], "error: --seed must be between 0 and 4294967295 (got -1)"),
    ("generate.py", ["--smoothness=nan"], "error: --smoothness must be a finite number of frames (got nan)"),
    ("train.py", ["--lr=nan"], "error: --lr must be a finite number (got nan)"),
    ("train.py", ["--w2=inf"], "error: --w2 must be a finite number (got inf)"),
    ("train.py", ["--seed=-1"], "error: --seed must be between 0 and 2147483647 (got -1)"),
    ("evaluate.py", ["--seeds", "-1"], "error: --seeds must be between 0 and 4294967295 (got -1)"),
    ("make_pose_data.py", ["--seed=-1"], "error: --seed must be between 0 and 4294967295 (got -1)"),
])
def test_bad_numbers_are_refused_up_front_in_one_line(script, args, message, tmp_path):
    proc = run_script(script, *args)
    assert proc.returncode == 2 and proc.stderr.strip() == message


def test_string_typed_pose_array_is_one_clear_error(data_dir, tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_poses_refine.npz").write_bytes((data_dir / f"{split}_poses_refine.npz").read_bytes())
    np.savez(tmp_path / "train_poses_refine.npz", poses=np.full((4, 39), "12.5"))
    with pytest.raises(UserError, match=r"'poses' holds <U4 values, expected numbers"):
        train.main(train_args(tmp_path, tmp_path / "checkpoint.pt", 1))
    assert not (tmp_path / "checkpoint.pt").exists()


def impossible_folder(tmp_path):
    """A folder no one can create, even root: its parent is a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return blocker / "out"


def test_unwritable_output_folders_are_one_line_before_any_work(trained, data_dir, tmp_path):
    where = impossible_folder(tmp_path)
    proc = run_script("train.py", "--epochs=1", *TINY, "--data", str(data_dir), "--checkpoint", str(where / "c.pt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"error: cannot write {where / 'c.pt'}: ")
    assert "epochs" not in proc.stdout  # refused before training
    proc = run_script("generate.py", "--n_frames=5", "--checkpoint", str(trained[0]), "--out", str(where / "p.npy"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: cannot write {where / 'p.npy'}: ")


@pytest.fixture
def full_folder(tmp_path):
    """A 64 KiB tmpfs, filled: a full disk (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_and_keeps_the_old_files(trained, full_folder):
    old = full_folder / "my_vae_poses.npy"
    np.save(old, np.zeros((2, 36), np.float32))
    before = old.read_bytes()
    with open(full_folder / "filler", "wb") as f:  # fill the rest of the disk
        with pytest.raises(OSError):
            f.write(b"0" * 200_000)
            f.flush()
            os.fsync(f.fileno())
    proc = run_script("generate.py", "--n_frames=3000", "--checkpoint", str(trained[0]), "--out", str(old))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"error: cannot write {old}: No space left on device")
    assert old.read_bytes() == before and not old.with_suffix(".json").exists()
    assert sorted(p.name for p in full_folder.iterdir()) == ["filler", "my_vae_poses.npy"]


def test_diverging_training_stops_in_one_line_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoint.pt"
    train.main(train_args(data_dir, ckpt, 1))
    before = ckpt.read_bytes()
    proc = run_script("train.py", "--epochs=3", *TINY, "--data", str(data_dir), "--checkpoint", str(ckpt),
                      "--lr=1e30", "--restart")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # the lines before are the progress bar's
    assert last.startswith("error: the loss became NaN/inf in epoch ")
    assert "no checkpoint was written" in last  # --restart: the old one is not its own
    assert ckpt.read_bytes() == before
    # A run that saved epoch 1 and diverges in epoch 2 (fault injected into the real epoch) keeps epoch 1.
    real_epoch = train.train_epoch
    calls = []

    def diverge_in_epoch_2(*args):
        calls.append(1)
        return real_epoch(*args) if len(calls) == 1 else float("nan")

    monkeypatch.setattr(train, "train_epoch", diverge_in_epoch_2)
    monkeypatch.setattr(train, "SAVE_EVERY_S", 0.0)
    with pytest.raises(UserError, match=r"NaN/inf in epoch 2: .*kept the last good checkpoint \(1 epochs\)"):
        train.main(train_args(data_dir, ckpt, 3, "--restart"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model_state_dict"].values())


def test_generate_refuses_a_checkpoint_with_nan_weights(trained, tmp_path):
    ckpt = torch.load(trained[0], weights_only=True)
    ckpt["model_state_dict"]["decoder.0.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    out = tmp_path / "poses.npy"
    with pytest.raises(UserError, match=r"holds NaN/inf weights \(decoder.0.weight\): training diverged"):
        generate.main(["--checkpoint", str(tmp_path / "nan.pt"), "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_saves_a_resume_point_and_says_how_to_resume(data_dir, tmp_path, sig):
    ckpt = tmp_path / "checkpoint.pt"
    args = ["--epochs=100000", *TINY, "--data", str(data_dir), "--checkpoint", str(ckpt)]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO / "VAE", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # wait until it trains
        if line.startswith("train "):
            break
    time.sleep(3.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    epochs = torch.load(ckpt, weights_only=True)["epoch"]
    assert epochs >= 1
    assert err.strip().splitlines()[-1] == (f"interrupted: saved {ckpt} after {epochs} epochs; to resume, run the same command "
                           f"again: cd VAE && python train.py {' '.join(args)}")
    # and it resumes from there, exactly as if it had never stopped
    result = train.main(train_args(data_dir, ckpt, epochs + 1))
    assert len(result["train_losses"]) == epochs + 1
    straight = tmp_path / "straight" / "checkpoint.pt"
    train.main(train_args(data_dir, straight, epochs + 1))
    a, b = torch.load(straight, weights_only=True), torch.load(ckpt, weights_only=True)
    assert a["train_losses"] == b["train_losses"]
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key


# --- research knobs and dead ends (issue 16) ------------------------------------------------

def test_reconstruction_unit_is_stored_and_a_changed_one_is_refused_on_resume(trained, data_dir):
    ckpt_path, _ = trained
    config = torch.load(ckpt_path, weights_only=True)["config"]
    assert config["model"]["recon_unit_deg"] == train.RECON_UNIT_DEG
    assert config["model"]["convention"] == "pasyn2"
    with pytest.raises(UserError, match=r"recon_unit_deg=7.0 \(now 9.0\).*--restart"):
        train.main(train_args(data_dir, ckpt_path, 5, "--recon_unit_deg=9"))


def test_smooth_noise_keeps_unit_variance_per_latent_dimension():
    rng = np.random.default_rng(0)
    for smoothness in (0.0, 3.0, 20.0):
        z = smooth_noise(20000, 6, smoothness, rng)
        assert z.shape == (20000, 6)
        assert np.allclose(z.std(0), 1.0, atol=0.1), smoothness  # samples cannot collapse to the mean
        assert np.allclose(z.mean(0), 0.0, atol=0.15)
    z = smooth_noise(20000, 2, 20.0, rng)
    assert np.corrcoef(z[1:, 0], z[:-1, 0])[0, 1] > 0.9  # and still smooth


def test_sampling_density_is_fitted_to_the_training_codes(trained):
    ckpt = torch.load(trained[0], weights_only=True)
    weights = ckpt["model_state_dict"]["prior_weights"]
    assert len(weights) == 2 and torch.isclose(weights.sum(), torch.tensor(1.0))
    assert torch.any(ckpt["model_state_dict"]["prior_means"] != 0)
