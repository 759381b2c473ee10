"""Checks of the flags that train.py, stylize.py and evaluate.py share: one line each (UserError)."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import UserError, check_seed  # noqa: E402

import cnn_adain_model as M  # noqa: E402


def check_alpha(alpha, flag="--alpha"):
    if not 0 <= alpha <= 1:  # NaN fails this too
        raise UserError(f"{flag} {alpha} is outside [0, 1]")


def check_size(height, width):
    try:
        M.check_size(height, width)
    except ValueError as e:
        raise UserError(str(e)) from None


def check_alpha_size_seed(args):
    """--alpha in [0, 1], a size the decoder can rebuild, a seed numpy and torch both take."""
    check_alpha(args.alpha)
    check_size(args.height, args.width)
    check_seed(args.seed)


def check_range(name, low, high, lowest, highest):
    """A LOW HIGH flag: finite, ordered and inside [lowest, highest]."""
    if not (math.isfinite(low) and math.isfinite(high) and lowest <= low <= high <= highest):
        raise UserError(f"--{name} {low:g} {high:g} must be LOW <= HIGH within [{lowest:g}, {highest:g}]")


def check_positive(name, value, zero_ok=False):
    if not (math.isfinite(value) and (value > 0 or zero_ok and value == 0)):
        raise UserError(f"--{name} {value} must be a {'non-negative' if zero_ok else 'positive'} number")
