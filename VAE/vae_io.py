"""File I/O of the VAE stage, shared by train.py, generate.py and evaluate.py.

Pose files are checked before use and every problem is one UserError line; checkpoints are
self-describing dicts (CPU tensors, so they load on any machine) written atomically and loaded
with an architecture check.
"""
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import on_cpu  # noqa: E402
from pasyn.angles import CONVENTIONS, N_POSE, guess_convention  # noqa: E402
from pasyn.files import MADE_BY, UserError, atomic_path, check_rows, require_file  # noqa: E402
from vposer import VPoser  # noqa: E402

MAKE_DATA = "cd VAE && python make_pose_data.py"
N_ROOT_COLUMNS = 3  # the .npz rows start with the root's 3 angles, which the VAE ignores
SPLITS = ("train", "val", "test")


def read_pose_file(path, n_leg_joints):
    """(poses (N, n_leg_joints) float64, convention tag or None) from a *_poses_refine.npz:
    key `poses`, N x (3 + n), and optionally `convention` (our files carry it; the original
    PASyn files hold only `poses` and load unchanged)."""
    path = require_file(path, MAKE_DATA)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "poses" not in f.files:
                raise UserError(f"{path} has no array 'poses' (keys: {', '.join(f.files) or 'none'})")
            raw = f["poses"]
            tag = str(f["convention"]) if "convention" in f.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}".splitlines()[0]) from None
    if raw.dtype.kind not in "fiu":
        raise UserError(f"{path}: 'poses' holds {raw.dtype} values, expected numbers (degrees)")
    poses = raw.astype(np.float64)
    check_rows(poses, path, N_ROOT_COLUMNS + n_leg_joints,
               f"({N_ROOT_COLUMNS} root angles + {n_leg_joints} leg angles, --n_leg_joints)")
    if tag is not None and tag not in CONVENTIONS:
        raise UserError(f"{path} says its convention is {tag!r}; known: {', '.join(CONVENTIONS)}")
    return poses[:, N_ROOT_COLUMNS:], tag


def load_pose_file(path, n_leg_joints):
    """(N, n_leg_joints) float64 leg angles of a *_poses_refine.npz (see read_pose_file)."""
    return read_pose_file(path, n_leg_joints)[0]


def load_pose_splits(data_dir, n_leg_joints, convention="auto"):
    """({split: poses}, convention, how it was decided) for data_dir/{train,val,test}_poses_refine.npz.

    The convention is the --convention flag if given, else the files' tag, else the one whose
    rest pose the training poses' medians are nearest to (pasyn.angles.guess_convention).
    """
    read = {s: read_pose_file(Path(data_dir) / f"{s}_poses_refine.npz", n_leg_joints) for s in SPLITS}
    data = {s: poses for s, (poses, _) in read.items()}
    tags = {tag for _, tag in read.values() if tag is not None}
    if convention != "auto":
        return data, convention, "--convention"
    if len(tags) > 1:
        raise UserError(f"{data_dir}: the splits are tagged with different conventions ({', '.join(sorted(tags))}); "
                        "remake them, or pick one with --convention")
    if tags:
        return data, tags.pop(), "tagged in the files"
    if n_leg_joints != N_POSE:
        return data, CONVENTIONS[0], f"untagged, {n_leg_joints} angles: taken as ours"
    guess, distances = guess_convention(data["train"])
    how = "untagged; median x angles " + ", ".join(f"{d:.0f} deg from {c}'s rest pose" for c, d in distances.items())
    return data, guess, how


def save_checkpoint(path, checkpoint):
    try:
        with atomic_path(path) as tmp:
            torch.save(on_cpu(checkpoint), tmp)
    except OSError as e:  # read-only or full folder: the old checkpoint is still whole
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def read_checkpoint(path):
    """The checkpoint dict; one clear line when it is missing, unreadable or not ours."""
    path = require_file(path, MADE_BY.get(Path(path), "step 1: cd VAE && python train.py"))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or pickled with code
        raise UserError(f"cannot read checkpoint {path}: {e}".splitlines()[0]) from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model_state_dict" not in ckpt:
        raise UserError(f"{path} is not a checkpoint of this VAE (no 'config'/'model_state_dict'); "
                        "retrain with: cd VAE && python train.py")
    return flat_config(ckpt)


def flat_config(ckpt):
    """Checkpoints written before the config was one flat dict kept it in three parts (model,
    train, data): read them in the flat layout, so they still sample, score and resume."""
    config = ckpt["config"]
    if isinstance(config, dict) and isinstance(config.get("model"), dict) and isinstance(config.get("train"), dict):
        ckpt["data"] = config.get("data")
        ckpt["config"] = {**config["model"], **config["train"]}
    return ckpt


def model_from_checkpoint(ckpt, path):
    """Rebuild VPoser from the checkpoint's own config and load its weights (on the CPU)."""
    try:
        model = VPoser.from_config(ckpt["config"])
        model.load_state_dict(ckpt["model_state_dict"])
    except (KeyError, TypeError, RuntimeError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} was made with another architecture than this vposer.py "
                        f"({first}); retrain with: cd VAE && python train.py --restart") from None
    return model.eval()


def load_model(path):
    """(model, checkpoint); one line if the weights hold NaN/inf (a diverged run)."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path} holds NaN/inf weights ({bad[0]}): training diverged; retrain with "
                        "cd VAE && python train.py --restart (a smaller --lr)")
    return model, ckpt


def save_figure(fig, path, fmt, dpi):
    """A matplotlib figure written atomically; an unwritable folder is one line. The figure is closed."""
    import matplotlib.pyplot as plt
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
