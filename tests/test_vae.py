"""VAE stage: pose data maker, vposer.py, train.py, generate.py, evaluate.py (tiny real runs, in-process)."""
import inspect
import json
import hashlib
import os
import re
import signal
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
from pasyn import angles  # noqa: E402
import make_pose_data  # noqa: E402
import train  # noqa: E402
import vae_io  # noqa: E402
from pasyn.files import UserError, run_main  # noqa: E402
from pasyn.resume import nothing_to_train_line, stopped_line  # noqa: E402
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


def copy_splits(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        (dst / f"{split}_poses_refine.npz").write_bytes((src / f"{split}_poses_refine.npz").read_bytes())
    return dst


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_training(a, b):
    assert a["epoch"] == b["epoch"] and a["train_losses"] == b["train_losses"] and a["val_losses"] == b["val_losses"]
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key


# --- angle representation -------------------------------------------------------------------

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


def test_smooth_noise_keeps_unit_variance_per_latent_dimension():
    rng = np.random.default_rng(0)
    for smoothness in (0.0, 3.0, 20.0):
        z = smooth_noise(20000, 6, smoothness, rng)
        assert z.shape == (20000, 6)
        assert np.allclose(z.std(0), 1.0, atol=0.1), smoothness  # samples cannot collapse to the mean
        assert np.allclose(z.mean(0), 0.0, atol=0.15)
    z = smooth_noise(20000, 2, 20.0, rng)
    assert np.corrcoef(z[1:, 0], z[:-1, 0])[0, 1] > 0.9  # and still smooth


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

def test_one_config_block_gives_the_flags_the_model_defaults_and_the_checkpoint_config(trained):
    flags = vars(train.parse_args([]))
    assert {k: flags[k] for k in train.CONFIG} == train.CONFIG
    # VPoser() is the model train.py trains with its defaults
    defaults = {n: p.default for n, p in inspect.signature(VPoser).parameters.items()}
    assert set(defaults) - set(train.CONFIG) == {"convention"}
    for name, value in defaults.items():
        if name in train.CONFIG:
            assert (list(value) if name == "hidden" else value) == train.CONFIG[name], name
    # the checkpoint's config: every setting as this run had it, the data's convention and hash ...
    config = load(trained[0])["config"]
    assert set(config) == set(train.CONFIG) | {"convention", "train_data"}
    assert (config["epochs"], config["hidden"], config["latent_dim"], config["prior_components"]) == (3, [16, 12], 4, 2)
    assert config["recon_unit_deg"] == train.CONFIG["recon_unit_deg"] and config["convention"] == "pasyn2"
    # ... from which generate.py rebuilds the model
    model, _ = vae_io.load_model(trained[0])
    assert (model.hidden, model.latent_dim, len(model.prior_weights)) == ((16, 12), 4, 2)


def test_training_lowers_the_loss_and_writes_the_checkpoint_plot_and_sampling_density(trained):
    ckpt_path, result = trained
    assert result["train_losses"][-1] < result["train_losses"][0]
    assert result["val_losses"][-1] < result["val_losses"][0]
    ckpt = load(ckpt_path)
    assert ckpt["epoch"] == 3 and all(type(x) is float for x in ckpt["train_losses"] + ckpt["val_losses"])
    assert set(ckpt) >= {"epoch", "model_state_dict", "optimizer_state_dict", "train_losses", "val_losses", "config",
                         "data", "rng_state"}
    assert (ckpt_path.parent / "losses.jpg").read_bytes()[:2] == b"\xff\xd8"
    # the sampling density: a mixture fitted to the training codes, not N(0, I)
    weights = ckpt["model_state_dict"]["prior_weights"]
    assert len(weights) == 2 and torch.isclose(weights.sum(), torch.tensor(1.0))
    assert torch.any(ckpt["model_state_dict"]["prior_means"] != 0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_same_command_resumes_exactly_after_more_epochs_or_a_stop(data_dir, tmp_path, monkeypatch, capsys, sig):
    straight, resumed = tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt"
    train.main(train_args(data_dir, straight, 4))
    train.main(train_args(data_dir, resumed, 2))
    epoch_2 = load(resumed)
    # --epochs 4 resumes; Ctrl-C (or SIGTERM) comes in its second epoch, after that epoch's weights moved
    real_epoch, calls = train.train_epoch, []

    def signal_in_the_second_epoch(*args):
        calls.append(1)
        loss = real_epoch(*args)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)  # a real signal, handled as train.py's command line handles it
        return loss

    monkeypatch.setattr(train, "train_epoch", signal_in_the_second_epoch)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            run_main(train.main, train_args(data_dir, resumed, 4))
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"interrupted: {stopped_line(resumed, 3)}"
    stopped = load(resumed)
    assert stopped["epoch"] == 3  # the last whole epoch, not the half-done one
    # with the sampling density fitted to its own weights, so generate.py can use it
    assert not torch.equal(stopped["model_state_dict"]["prior_means"], epoch_2["model_state_dict"]["prior_means"])
    monkeypatch.undo()
    train.main(train_args(data_dir, resumed, 4))  # the same command again
    assert_same_training(load(straight), load(resumed))
    # fewer epochs: nothing to train, the checkpoint untouched
    before = resumed.read_bytes()
    train.main(train_args(data_dir, resumed, 2))
    assert nothing_to_train_line(resumed, 4, 2) in capsys.readouterr().out
    assert resumed.read_bytes() == before


@pytest.mark.parametrize("change, named", [
    (["--lr", "0.01"], "lr 0.001 (now 0.01)"),
    (["--recon_unit_deg", "9"], "recon_unit_deg 7.0 (now 9.0)"),
    ("one training pose fewer", "train_data '"),
])
def test_a_changed_setting_or_data_is_named_in_one_line_and_restart_starts_over(data_dir, tmp_path, change, named):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    train.main(train_args(data_dir, ckpt, 1))
    before, old_config = ckpt.read_bytes(), load(ckpt)["config"]
    data, flags = data_dir, change
    if change == "one training pose fewer":
        data, flags = copy_splits(data_dir, tmp_path / "other"), []
        write_poses(data / "train_poses_refine.npz", np.load(data_dir / "train_poses_refine.npz")["poses"][:-1])
    with pytest.raises(UserError) as e:
        train.main(train_args(data, ckpt, 2, *flags))
    assert str(e.value).startswith(f"{ckpt} was trained with other settings: {named}") and "--restart" in str(e.value)
    assert ckpt.read_bytes() == before
    train.main(train_args(data, ckpt, 1, *flags, "--restart"))
    assert load(ckpt)["config"] != old_config  # started over with the new setting


@pytest.mark.parametrize("problem, message", [
    ("missing", r"missing .*val_poses_refine\.npz \(made by cd VAE && python make_pose_data\.py\)"),
    ("shape", r"shape \(10, 36\), expected \(N, 39\)"),
    ("nan", r"NaN/inf in 1 rows \(first: row 1\)"),
    ("strings", r"'poses' holds <U4 values, expected numbers"),
])
def test_a_bad_pose_folder_is_one_line_and_writes_nothing(data_dir, tmp_path, problem, message):
    copy_splits(data_dir, tmp_path)
    bad = {"shape": np.zeros((10, 36)), "strings": np.full((4, 39), "12.5"),
           "nan": np.where(np.arange(390).reshape(10, 39) == 50, np.nan, 1.0)}
    if problem == "missing":
        (tmp_path / "val_poses_refine.npz").unlink()
    else:
        write_poses(tmp_path / "val_poses_refine.npz", bad[problem])
    with pytest.raises(UserError, match=message):
        train.main(train_args(tmp_path, tmp_path / "out" / "checkpoint.pt", 1))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script, argv, message", [
    (train, ["--lr=nan"], "--lr must be a finite number (got nan)"),
    (train, ["--w2=inf"], "--w2 must be a finite number (got inf)"),
    (train, ["--n_leg_joints=35"], "--n_leg_joints must be a positive multiple of 3 (got 35)"),
    (generate, ["--n_frames=0"], "--n_frames must be at least 1 (got 0)"),
    (generate, ["--smoothness=nan"], "--smoothness must be a finite number of frames (got nan)"),
    (generate, ["--out=poses.txt"], "--out must be a .npy file (got poses.txt)"),
])
def test_bad_numbers_are_refused_up_front_in_one_line(script, argv, message):
    with pytest.raises(UserError) as e:
        script.parse_args(argv)
    assert str(e.value) == message


def impossible_folder(tmp_path):
    """A folder no one can create, even root: its parent is a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return blocker / "out"


def test_an_unwritable_output_folder_is_one_line_before_any_work(trained, data_dir, tmp_path, capsys):
    where = impossible_folder(tmp_path)
    with pytest.raises(UserError, match=f"^cannot write in {re.escape(str(where))}: "):
        train.main(train_args(data_dir, where / "c.pt", 1))
    assert "epochs" not in capsys.readouterr().out  # refused before training
    with pytest.raises(UserError, match=f"^cannot write in {re.escape(str(where))}: "):
        generate.main(["--n_frames=5", "--checkpoint", str(trained[0]), "--out", str(where / "p.npy")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA GPU here")
def test_device_cuda_without_a_gpu_is_one_line_before_any_work(trained, data_dir, tmp_path):
    for script, argv in [(train, train_args(data_dir, tmp_path / "c.pt", 1)),
                         (generate, ["--checkpoint", str(trained[0]), "--out", str(tmp_path / "p.npy")])]:
        with pytest.raises(UserError, match=r"^--device cuda: torch sees no CUDA GPU here"):
            script.main([*argv, "--device", "cuda"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: training on the GPU not checked")
def test_a_checkpoint_trained_on_the_gpu_holds_cpu_tensors_resumes_and_samples_anywhere(data_dir, tmp_path):
    gpu, cpu = tmp_path / "gpu" / "checkpoint.pt", tmp_path / "cpu" / "checkpoint.pt"
    train.main(train_args(data_dir, gpu, 2, "--device", "cuda"))
    train.main(train_args(data_dir, cpu, 2, "--device", "cpu"))
    saved = torch.load(gpu, weights_only=True)  # no map_location: every tensor was saved on the CPU
    tensors = list(saved["model_state_dict"].values()) + [
        v for s in saved["optimizer_state_dict"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert all(t.device.type == "cpu" for t in tensors)
    # the same draws on either device (all random numbers come from the CPU): nearly the same training
    assert np.allclose(saved["train_losses"], load(cpu)["train_losses"], rtol=1e-3, atol=1e-4)
    train.main(train_args(data_dir, gpu, 3, "--device", "cpu"))  # resumes on the CPU
    assert load(gpu)["epoch"] == 3
    on = {d: generate.main(["--n_frames=200", "--checkpoint", str(gpu), "--out", str(tmp_path / f"{d}.npy"),
                            "--device", d]) for d in ("cuda", "cpu")}
    assert geodesic_degrees(matrices_from_poses(on["cuda"]), matrices_from_poses(on["cpu"])).max() < 0.1


def test_diverging_training_stops_in_one_line_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoint.pt"
    train.main(train_args(data_dir, ckpt, 1))
    before = ckpt.read_bytes()
    with pytest.raises(UserError, match=r"^the loss became NaN/inf in epoch \d+: training diverged; "
                                        r"no checkpoint was written"):  # --restart: the old one is not its own
        train.main(train_args(data_dir, ckpt, 3, "--lr=1e30", "--restart"))
    assert ckpt.read_bytes() == before
    # A run that saved epoch 1 and diverges in epoch 2 (fault injected into the real epoch) keeps epoch 1.
    real_epoch, calls = train.train_epoch, []

    def diverge_in_epoch_2(*args):
        calls.append(1)
        return real_epoch(*args) if len(calls) == 1 else float("nan")

    monkeypatch.setattr(train, "train_epoch", diverge_in_epoch_2)
    monkeypatch.setattr(train, "SAVE_EVERY_S", 0.0)
    with pytest.raises(UserError, match=r"NaN/inf in epoch 2: .*kept the last good checkpoint \(1 epochs\)"):
        train.main(train_args(data_dir, ckpt, 3, "--restart"))
    saved = load(ckpt)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model_state_dict"].values())


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

def test_generate_writes_float32_poses_in_range_deterministically_with_their_sidecar(trained, tmp_path):
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
    side = json.loads(runs["a"].with_suffix(".json").read_text())
    assert (side["convention"], side["mode"], side["seed"]) == ("pasyn2", "trajectory", 7)
    assert side["poses_sha1"] == hashlib.sha1(runs["a"].read_bytes()).hexdigest()


def test_a_checkpoint_of_the_nested_config_layout_still_samples_and_resumes(trained, data_dir, tmp_path):
    """Checkpoints written before the flat config: config = {model, train, data}."""
    ckpt = load(trained[0])
    config = ckpt["config"]
    model_keys = [n for n in inspect.signature(VPoser).parameters]
    ckpt["config"] = {"model": {k: config[k] for k in model_keys},
                      "train": {k: config[k] for k in ("batch_size", "lr", "w1", "w2", "seed", "train_data")},
                      "data": ckpt.pop("data")}
    old = tmp_path / "old" / "checkpoint.pt"
    old.parent.mkdir()
    torch.save(ckpt, old)
    for path, out in ((trained[0], tmp_path / "new.npy"), (old, tmp_path / "old.npy")):
        generate.main(["--n_frames", "40", "--checkpoint", str(path), "--out", str(out)])
    assert (tmp_path / "new.npy").read_bytes() == (tmp_path / "old.npy").read_bytes()
    uniform = generate.main(["--mode", "uniform", "--n_frames", "5", "--checkpoint", str(old),
                             "--out", str(tmp_path / "u.npy")])
    assert uniform.shape == (5, 36)
    train.main(train_args(data_dir, old, 4))  # the same settings: it resumes
    assert load(old)["epoch"] == 4


def test_trajectory_mode_moves_less_per_frame_than_independent_samples(trained):
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
    given = vae_io.load_pose_file(data_dir / "test_poses_refine.npz", 36)[:32]
    errors = geodesic_degrees(matrices_from_poses(poses[:32]), matrices_from_poses(given))
    assert errors.mean() < 30.0  # reconstructions of those poses, even after 3 tiny epochs


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


@pytest.mark.parametrize("problem, message", [
    ("missing", r"missing .*checkpoint\.pt"),
    ("foreign", "not a checkpoint of this VAE"),
    ("another architecture", "made with another architecture than this vposer.py"),
    ("NaN weights", r"holds NaN/inf weights \(decoder\.0\.weight\): training diverged"),
])
def test_an_unusable_checkpoint_is_one_line_and_nothing_is_written(trained, tmp_path, problem, message):
    path = tmp_path / "checkpoint.pt"
    ckpt = load(trained[0])
    if problem == "foreign":
        torch.save({"decoder": {}}, path)
    elif problem == "another architecture":
        ckpt["model_state_dict"] = VPoser(hidden=(8,), latent_dim=3).state_dict()  # config says 16, 12 / 4
        torch.save(ckpt, path)
    elif problem == "NaN weights":
        ckpt["model_state_dict"]["decoder.0.weight"][0, 0] = float("nan")
        torch.save(ckpt, path)
    out = tmp_path / "poses.npy"
    with pytest.raises(UserError, match=message):
        generate.main(["--checkpoint", str(path), "--out", str(out)])
    assert not out.exists() and not out.with_suffix(".json").exists()


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
    with pytest.raises(UserError, match=f"^cannot write in {re.escape(str(full_folder))}: No space left on device"):
        generate.main(["--n_frames=3000", "--checkpoint", str(trained[0]), "--out", str(old)])
    assert old.read_bytes() == before
    assert sorted(p.name for p in full_folder.iterdir()) == ["filler", "my_vae_poses.npy"]


# --- evaluate.py --------------------------------------------------------------------------

def test_precision_recall_separate_matching_from_disjoint_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 5))
    assert evaluate.precision_recall(real, real, k=3) == (1.0, 1.0)
    assert evaluate.precision_recall(real + 100.0, real, k=3) == (0.0, 0.0)
    collapsed = real[:5] * 0.01  # a generator stuck near one mode: realistic but not varied
    precision, recall = evaluate.precision_recall(collapsed, real, k=3)
    assert precision == 1.0 and recall < 0.2


# --- pose conventions -----------------------------------------------------------------------

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
    assert angles.pose_file_convention(out) == "pasyn"
    # written as PASyn's convention (y and z kept, not re-derived through our rig), and they
    # pose our rig with hanging legs once converted, as step 3 does
    assert np.abs(poses[:, 1::3]).mean() > 3.0
    assert angles.guess_convention(poses)[0] == "pasyn"
    assert angles.legs_hanging(angles.to_ours(poses, "pasyn")).mean() >= 0.9


def test_evaluate_scores_samples_draws_the_plot_and_refuses_a_convention_mismatch(pasyn_trained, pasyn_dir,
                                                                                   data_dir, tmp_path):
    plot = tmp_path / "pose_plot.png"
    results = evaluate.main(["--checkpoint", str(pasyn_trained[0]), "--data", str(pasyn_dir), "--n_samples", "100",
                             "--seeds", "0", "1", "--plot", str(plot)])
    assert set(results) == {"sampled, seed 0", "sampled, seed 1", "validation (ceiling)"}
    for r in results.values():
        assert set(r) == {"precision", "recall", "near_copies", "legs_hanging"}
        assert all(0.0 <= v <= 1.0 for v in r.values())
    assert results["sampled, seed 0"] != results["sampled, seed 1"]
    assert results["validation (ceiling)"]["legs_hanging"] > 0.9  # PASyn poses drawn on our rig: legs hang
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="pasyn convention but .* pasyn2"):
        evaluate.main(["--checkpoint", str(pasyn_trained[0]), "--data", str(data_dir), "--n_samples", "20",
                       "--plot", str(tmp_path / "plot.png")])
