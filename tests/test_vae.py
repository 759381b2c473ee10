"""VAE stage: pose data maker, vposer.py, train.py, generate.py, evaluate.py (tiny, real runs)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "VAE"))
sys.path.insert(0, str(REPO))

import evaluate  # noqa: E402
import generate  # noqa: E402
import make_pose_data  # noqa: E402
import train  # noqa: E402
import vae_io  # noqa: E402
from pasyn.files import UserError  # noqa: E402
from vposer import (ChordSquared, VPoser, geodesic_degrees, matrices_from_poses, matrices_from_sixd,  # noqa: E402
                    poses_from_matrices, sixd_from_matrices)

TINY = ["--hidden", "16", "12", "--latent_dim", "4", "--batch_size", "32"]


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
    assert evaluate.near_copy_share(test_f, train_f, copy_deg=0.5, n_joints=12) == 0.0


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
    results = evaluate.main(["--checkpoint", str(trained[0]), "--data_dir", str(data_dir), "--plot", str(plot)])
    for r in results.values():
        assert set(r) == {"precision", "recall", "near_copies", "out_of_coverage"}
        assert all(0.0 <= v <= 1.0 for v in r.values())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
