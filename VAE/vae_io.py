"""File I/O of the VAE stage, shared by train.py, generate.py and evaluate.py.

Pose files are checked before use and every problem is one UserError line; checkpoints are
self-describing dicts written atomically and loaded with an architecture check.
"""
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import MADE_BY, UserError, atomic_path, check_rows, require_file  # noqa: E402
from vposer import VPoser  # noqa: E402

MAKE_DATA = "cd VAE && python make_pose_data.py"
N_ROOT_COLUMNS = 3  # the .npz rows start with the root's 3 angles, which the VAE ignores


def load_pose_file(path, n_leg_joints):
    """(N, n_leg_joints) float64 leg angles from a *_poses_refine.npz (key `poses`, N x (3 + n)).

    The original PASyn files have this format and load unchanged.
    """
    path = require_file(path, MAKE_DATA)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "poses" not in f.files:
                raise UserError(f"{path} has no array 'poses' (keys: {', '.join(f.files) or 'none'})")
            poses = np.asarray(f["poses"], dtype=np.float64)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    check_rows(poses, path, N_ROOT_COLUMNS + n_leg_joints,
               f"({N_ROOT_COLUMNS} root angles + {n_leg_joints} leg angles, --n_leg_joints)")
    return poses[:, N_ROOT_COLUMNS:]


def save_checkpoint(path, checkpoint):
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


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
    return ckpt


def model_from_checkpoint(ckpt, path):
    """Rebuild VPoser from the checkpoint's own config and load its weights."""
    try:
        model = VPoser(**ckpt["config"]["model"])
        model.load_state_dict(ckpt["model_state_dict"])
    except (KeyError, TypeError, RuntimeError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} was made with another architecture than this vposer.py "
                        f"({first}); retrain with: cd VAE && python train.py --restart") from None
    return model.eval()


def load_model(path):
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, path), ckpt
