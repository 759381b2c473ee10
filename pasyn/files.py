"""Files between the stages: fixed paths, atomic writes, input checks, one-line user errors."""
import contextlib
import errno
import io
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VAE_DATA = REPO / "VAE" / "data"
VAE_CHECKPOINT = REPO / "VAE" / "checkpoint.pt"
POSES_NPY = REPO / "blender" / "my_vae_poses.npy"
BLEND_FILE = REPO / "blender" / "custom_zebra.blend"
GT_NPY = REPO / "blender" / "blender_gt.npy"
VIS_NPY = REPO / "blender" / "blender_vis.npy"
RENDER_ANNOTATIONS = REPO / "blender" / "annotations.json"
SYNTH_DIR = REPO / "style_transfer" / "data" / "synthetic_images" / "zebra"
SHADOW_DIR = REPO / "style_transfer" / "data" / "synthetic_shadows"   # step 3's ground shadow per frame, named like it


def shadow_dir_for(image_dir):
    """Where step 3 puts the shadows of the frames in image_dir: SHADOW_DIR for the usual frames,
    else a folder beside image_dir named <image_dir>_shadows."""
    image_dir = Path(image_dir)
    return SHADOW_DIR if image_dir.resolve() == SYNTH_DIR.resolve() else image_dir.with_name(image_dir.name + "_shadows")
BACKGROUND_DIR = REPO / "style_transfer" / "data" / "backgrounds"
STYLE_CHECKPOINT = REPO / "style_transfer" / "checkpoint.pt"
STYLIZED_DIR = REPO / "style_transfer" / "stylized_images"

# Which command makes each hand-off file, for "missing file" messages.
MADE_BY = {
    VAE_CHECKPOINT: "step 1: cd VAE && python train.py",
    POSES_NPY: "step 2: cd VAE && python generate.py --n_frames=N",
    GT_NPY: "step 3: cd blender && blender -b custom_zebra.blend -P animation_script.py -- --n_frames=N",
    VIS_NPY: "step 3: cd blender && blender -b custom_zebra.blend -P animation_script.py -- --n_frames=N",
    RENDER_ANNOTATIONS: "step 3: cd blender && blender -b custom_zebra.blend -P animation_script.py -- --n_frames=N",
    SYNTH_DIR: "step 3: cd blender && blender -b custom_zebra.blend -P animation_script.py -- --n_frames=N",
    BLEND_FILE: "cd blender && python build_zebra.py",
    STYLE_CHECKPOINT: "step 4: cd style_transfer && python train.py",
}


_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """A problem with the user's input or files: reported as one line, no traceback."""


class Stopped(Exception):
    """The user stopped a run (Ctrl-C, SIGTERM) and it stopped cleanly: one line saying how to go on, exit 130."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that code which saves a resume point on Ctrl-C also does on SIGTERM."""


def _raise_terminated(signum, frame):
    raise Terminated()


# Errors of the machine rather than of the program: a full disk, a read-only or missing folder.
_FILE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EMFILE, errno.EIO}


def run_main(main, argv=None):
    """Run a script's main(argv), turning expected failures into one line on stderr:
    a UserError exits 2; a full disk or an unwritable folder exits 1; Ctrl-C and SIGTERM exit 130."""
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Stopped as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{how}: outputs already written are complete; partial ones were discarded", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno not in _FILE_ERRNOS:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write or read{where}: {e.strerror or e}"
              f"{' (free some space and run it again)' if e.errno in (errno.ENOSPC, errno.EDQUOT) else ''}",
              file=sys.stderr)
        sys.exit(1)


def frame_name(prefix, index, ext, n_frames=0):
    """Zero-padded to at least 5 digits, more when n_frames needs them, so sorted names follow
    frame order at any N."""
    digits = max(5, len(str(max(n_frames, 1) - 1)))
    return f"{prefix}_{index:0{digits}d}.{ext}"


SEED_MAX = 2 ** 32 - 1  # numpy's seeds; torch's are wider


def check_seed(seed, flag="--seed", high=SEED_MAX):
    """A seed flag inside 0..high, or one line saying so."""
    if not 0 <= seed <= high:
        raise UserError(f"{flag} must be between 0 and {high} (got {seed})")


def check_writable(*folders):
    """One line now, before any work, when a folder cannot take our files: it is a file, it is
    read-only, or its disk is full. Makes missing folders. The probe is 4 KiB, written and synced,
    so a disk with a few bytes left fails here rather than after the first frame or epoch."""
    for folder in map(Path, folders):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file, expected a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test.") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise UserError(f"cannot write in {folder}: {e.strerror or e}") from None


def require_file(path, made_by=None):
    path = Path(path)
    if not path.exists():
        hint = made_by or MADE_BY.get(path)
        raise UserError(f"missing {path}" + (f" (made by {hint})" if hint else ""))
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; it replaces `path` only if the block finishes.

    A crash or Ctrl-C inside the block leaves the old file (or none) untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:  # a write that failed names no file (a full disk): name the one we were writing
        if e.errno is None:  # numpy's own writer: "1 requested and 0 written"
            raise OSError(errno.EIO, f"{e} (is the disk full?)", str(path)) from None
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def npy_bytes(array):
    """The .npy file of an array as bytes: written with one write() that reports a full disk as ENOSPC."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def save_npy(path, array):
    with atomic_path(path) as tmp:
        tmp.write_bytes(npy_bytes(array))


def save_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def load_array(path, width, dtype=np.float32, what="array"):
    """Load an (N, width) .npy and check it: readable, 2-D, right width, finite, not empty."""
    path = require_file(path)
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(a, np.ndarray):  # an .npz archive
        a.close()
        raise UserError(f"{path} is an .npz archive, expected one (N, {width}) array in a .npy file: {what}")
    check_rows(a, path, width, what)
    return a.astype(dtype, copy=False)


def check_rows(a, path, width, what):
    """An (N, width) array read from `path`: numbers, 2-D, the right width, not empty, finite."""
    if a.dtype.kind not in "fiu":
        raise UserError(f"{path} holds {a.dtype} values, expected numbers: {what}")
    if a.ndim != 2 or a.shape[1] != width:
        raise UserError(f"{path} has shape {a.shape}, expected (N, {width}) {what}")
    if len(a) == 0:
        raise UserError(f"{path} is empty")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.all(np.isfinite(a), axis=1))
        raise UserError(f"{path} has NaN/inf in {len(bad)} rows (first: row {bad[0]})")
