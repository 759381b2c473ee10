"""One resume rule for the three trainers (VAE/train.py, style_transfer/train.py, pose_net/train.py).

- Running the same command again resumes from its checkpoint, also after Ctrl-C mid-epoch.
- Every setting stored in the checkpoint's config must be the same, except --epochs, which may
  grow (training goes on to the new total) or shrink (nothing to train).
- A checkpoint trained with other settings is refused in one line that names them;
  --restart starts over (and overwrites it).
No torch here: the trainers read their own checkpoints and hand this module plain dicts.
"""
from pathlib import Path

from pasyn.files import UserError

RULE = "run the same command to resume (only --epochs may change), or add --restart to start over"
MAY_CHANGE = ("epochs",)


def _short(value, width=40):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def config_changes(old, new):
    """'name old (now new)' for every stored setting that differs, --epochs aside."""
    return [f"{k} {_short(old.get(k))} (now {_short(new.get(k))})"
            for k in sorted(set(old) | set(new)) if k not in MAY_CHANGE and old.get(k) != new.get(k)]


def check_same_config(path, old, new):
    changes = config_changes(old, new)
    if changes:
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise UserError(f"{path} was trained with other settings: {'; '.join(changes[:3])}{more}: {RULE}")


def checkpoint_to_resume(path, config, restart, read_checkpoint):
    """The checkpoint dict to go on from, or None to start fresh (no checkpoint, or --restart).

    read_checkpoint(path) is the trainer's own loader (it checks the file is one of its checkpoints)."""
    if restart or not Path(path).exists():
        return None
    ckpt = read_checkpoint(path)
    check_same_config(path, ckpt.get("config") or {}, config)
    return ckpt


def stopped_line(path, epoch, step=None):
    """What a trainer says when Ctrl-C or SIGTERM stopped it after saving (raise Stopped with it)."""
    where = f"epoch {epoch}" + (f", step {step}" if step else "")
    return f"saved a resume point in {path} ({where}); run the same command to resume"


def nothing_to_train_line(path, done, epochs):
    return f"{path} already has {done} epochs (--epochs {epochs}): nothing to train (--restart starts over)"
