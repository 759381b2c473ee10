"""cd pose_net && python ablate.py --real ANN DIR [--frames 1000] [--seeds 0 1] [--rows ...] [--work_dir runs/ablation]

Every realism lever measured on real zebra photos, by one command. For each row of
ablation_rows.py (the baseline: the Quick Start's pipeline at --frames N; every other row: the flags
that differ from it) it runs the stages as a user runs them (each in its own folder, every input and
output an explicit path under --work_dir, never the repo's default folders), trains step 6
(pose_net/train.py, its defaults, the same for every row) once per --seeds seed, and scores each
network on the real photos (PCK@0.1 and @0.05, per seed and their mean; evaluate.py --real, with its
contact sheet) and on the held-out frames of its own data set (synthetic PCK@0.1).

Stages a row does not change are shared with the baseline, and every finished piece is kept: the
same command run again reuses them (also after Ctrl-C: the stage that was stopped resumes with its
own rule), and --rows runs a subset. The table (--table, default docs/ablation.md) is written
atomically after every row, so partial progress shows. Per row and seed, the evaluate.py figures
(JSON) and the real-photo contact sheet are kept in WORK_DIR/rows/<row>/.

--smoke tests the harness end to end in minutes (--frames 60, a few epochs in every trainer) and writes
its table into the work folder; the real table uses every stage's own settings.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import cpu_name  # noqa: E402
from pasyn.files import REPO, Stopped, Terminated, UserError, atomic_path, check_seed, run_main, save_json  # noqa: E402

import ablation_rows as R  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_TABLE = REPO / "docs" / "ablation.md"
SEED_SPREAD = 0.03      # one training seed moves real PCK by about this much (a few hundred keypoints)
COUNTS = 0.05           # so a lever counts when the mean over seeds moves by more than this
REAL_NEEDED = "real zebra photos with AP-10K zebra labels (COCO) are needed: --real ANN DIR"
SKIP_WHY = {  # a row's field without a value: what the user can pass
    "pasyn_poses": "needs --pasyn_poses DIR (PASyn's {train,val,test}_poses_refine.npz)",
    "background_photos": "needs --background_photos DIR ANN: photos that are not the test photos "
                         "(backgrounds cut from the test photos would leak their scenery into training)",
}
SKIP_WHY["background_ann"] = SKIP_WHY["background_photos"]


def parse_args(argv):
    p = argparse.ArgumentParser(description="Ablation of the realism levers, scored on real zebra photos.")
    p.add_argument("--real", nargs=2, metavar=("ANN", "DIR"), type=Path,
                   help="real zebra photos with AP-10K zebra labels: COCO keypoint file and its image folder")
    p.add_argument("--frames", type=int, default=None, help="frames of the baseline data set (default: 1000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="step-6 training seeds (default: 0 1)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help=f"run these rows only (default: all): {' '.join(r[0] for r in R.ROWS)}")
    p.add_argument("--work_dir", type=Path, default=Path("runs/ablation"),
                   help="every stage's outputs and the per-row results (default: runs/ablation)")
    p.add_argument("--table", type=Path, default=None,
                   help="the table, Markdown (default: docs/ablation.md; with --smoke: WORK_DIR/ablation.md)")
    p.add_argument("--pasyn_poses", type=Path, default=None,
                   help="folder of PASyn's own pose files, for the row that trains the prior on them")
    p.add_argument("--background_photos", nargs=2, metavar=("DIR", "ANN"), type=Path, default=None,
                   help="photos to cut backgrounds from, and their COCO boxes; never the --real photos")
    p.add_argument("--real_note", default="",
                   help="a few words about the real set for the table's header (e.g. how its labels were made)")
    p.add_argument("--rescore", action="store_true",
                   help="score the finished rows' networks on the real photos again (after evaluate.py changed)")
    p.add_argument("--smoke", action="store_true",
                   help="test the harness: --frames 60 and a few epochs in every trainer (a smoke table)")
    args = p.parse_args(argv)
    if args.frames is None:
        args.frames = R.SMOKE_FRAMES if args.smoke else 1000
    args.table = args.table or (args.work_dir / "ablation.md" if args.smoke else DEFAULT_TABLE)
    args.work_dir = args.work_dir.resolve()
    args.table = args.table.resolve()
    return args


def check_args(args):
    if not args.real:
        raise UserError(REAL_NEEDED)
    ann, folder = args.real
    if not ann.is_file() or not folder.is_dir():
        raise UserError(f"{REAL_NEEDED} ({ann if not ann.is_file() else folder} is missing)")
    if args.frames < 20:
        raise UserError(f"--frames {args.frames}: at least 20 (step 6 holds out a tenth of them)")
    for seed in args.seeds:
        check_seed(seed, "--seeds")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed")
    names = [r[0] for r in R.ROWS]
    unknown = [r for r in args.rows or [] if r not in names]
    if unknown:
        raise UserError(f"unknown row {unknown[0]}: the rows are {' '.join(names)}")
    if args.pasyn_poses and not args.pasyn_poses.is_dir():
        raise UserError(f"--pasyn_poses {args.pasyn_poses} is not a folder")
    if args.background_photos:
        photos, bg_ann = args.background_photos
        if not photos.is_dir() or not bg_ann.is_file():
            raise UserError(f"--background_photos DIR ANN: {photos if not photos.is_dir() else bg_ann} is missing")
        if photos.resolve() == folder.resolve() or bg_ann.resolve() == ann.resolve():
            raise UserError("--background_photos are the --real photos: their scenery would leak into training")


# --- rows: flags and pieces ---------------------------------------------------------------------------

def fields_of(args):
    """Values of the {fields} in ablation_rows.py (None: the row needing it is skipped)."""
    bg = args.background_photos
    return {"frames": args.frames, "frames_x3": 3 * args.frames, "frames_x10": 10 * args.frames,
            "pasyn_poses": args.pasyn_poses and args.pasyn_poses.resolve(),
            "background_photos": bg and bg[0].resolve(), "background_ann": bg and bg[1].resolve()}


def missing_fields(changes, fields):
    names = {n for text in changes.values() for n in re.findall(r"{(\w+)}", text)}
    return sorted(n for n in names if fields.get(n) is None)


def flag_groups(text, fields):
    """'--a=1 --b 2 3 --c' -> [('a', ['--a=1']), ('b', ['--b', '2', '3']), ('c', ['--c'])]."""
    groups = []
    for token in shlex.split(text.format(**{k: str(v) for k, v in fields.items() if v is not None})):
        if token.startswith("--"):
            groups.append((token[2:].split("=", 1)[0], [token]))
        elif groups:
            groups[-1][1].append(token)
        else:
            raise ValueError(f"a value without a flag in {text!r}")
    return groups


def merged_flags(base, *overrides):
    """The baseline's flags with each override's flags in place of those of the same name (or added);
    --no-x replaces --x and the other way round."""
    out = list(base)
    for groups in overrides:
        for name, new in groups:
            twin = name[3:] if name.startswith("no-") else f"no-{name}"
            at = [i for i, g in enumerate(out) if g[0] in (name, twin)]
            out = [g for g in out if g[0] not in (name, twin)]
            out.insert(at[0] if at else len(out), (name, new))
    return out


def tokens(groups):
    return [t for _, tokens_ in groups for t in tokens_]


class Piece:
    """One stage run: its flags and the pieces it reads. Its folder is named by a hash of both, so
    two rows that ask for the same run share it."""

    def __init__(self, stage, flags, inputs=None, seed=None):
        self.stage, self.flags, self.inputs, self.seed = stage, flags, inputs or {}, seed
        ident = {"stage": stage, "flags": flags, "seed": seed,
                 "inputs": {k: v.key for k, v in sorted(self.inputs.items())}}
        self.key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]

    def folder(self, work_dir):
        return work_dir / "pieces" / f"{self.stage}_{self.key}"


def row_flags(changes, fields, smoke):
    """{stage: [flag groups]}: the baseline merged with --smoke's and the row's flags."""
    out = {}
    for stage, base in R.BASELINE.items():
        extra = [flag_groups(R.SMOKE.get(stage, ""), fields)] if smoke else []
        out[stage] = merged_flags(flag_groups(base, fields), *extra, flag_groups(changes.get(stage, ""), fields))
    return out


def upstream(flags):
    """The pieces up to the renders, and the backgrounds, for {stage: flag groups}."""
    vae = Piece("vae", tokens(flags["vae"]))
    generate = Piece("generate", tokens(flags["generate"]), {"vae": vae})
    render = Piece("render", tokens(flags["render"]), {"poses": generate})
    return {"vae": vae, "generate": generate, "render": render,
            "backgrounds": Piece("backgrounds", tokens(flags["backgrounds"]))}


def row_pieces(changes, fields, smoke, seeds):
    """{stage: Piece} of one row (pose_net: one per seed, as 'pose_net/SEED')."""
    f = row_flags(changes, fields, smoke)
    p = upstream(f)
    # the decoder learns how renders meet scenes: a row re-trains it only when it changes the decoder's
    # flags or the scenes; otherwise it stylizes with the baseline's, trained on the baseline's renders
    trained_on = p if "adain" in changes or "backgrounds" in changes else upstream(row_flags({}, fields, smoke))
    p["adain"] = Piece("adain", tokens(f["adain"]),
                       {"render": trained_on["render"], "backgrounds": trained_on["backgrounds"]})
    p["stylize"] = Piece("stylize", tokens(f["stylize"]),
                         {"render": p["render"], "adain": p["adain"], "backgrounds": p["backgrounds"]})
    for seed in seeds:
        p[f"pose_net/{seed}"] = Piece("pose_net", tokens(f["pose_net"]), {"data": p["stylize"]}, seed=seed)
    return p


def dependencies(piece):
    """Every piece this one needs, upstream first, itself last."""
    out = []
    for inp in piece.inputs.values():
        out += [d for d in dependencies(inp) if d.key not in {o.key for o in out}]
    return out + [piece]


# --- commands --------------------------------------------------------------------------------------

def outputs(piece, work_dir):
    """The explicit paths a piece writes (and its readers read)."""
    d = piece.folder(work_dir)
    return {"vae": {"checkpoint": d / "checkpoint.pt"},
            "generate": {"poses": d / "poses.npy"},
            "render": {"data": d / "data", "frames": d / "data" / "synthetic_images" / "zebra",
                       "labels": d / "labels", "annotations": d / "labels" / "annotations.json",
                       "shadows": d / "shadows"},
            "backgrounds": {"folder": d / "backgrounds"},
            "adain": {"checkpoint": d / "checkpoint.pt"},
            "stylize": {"folder": d / "stylized_images", "annotations": d / "stylized_images" / "annotations.json"},
            "pose_net": {"checkpoint": d / "checkpoint.pt"}}[piece.stage]


def command(piece, work_dir):
    """(folder, argv) of a piece: the stage's own command, its flags, and explicit paths."""
    folder, cmd = R.STAGES[piece.stage]
    out = outputs(piece, work_dir)
    inp = {k: outputs(v, work_dir) for k, v in piece.inputs.items()}
    paths = {
        "vae": lambda: ["--checkpoint", out["checkpoint"]],
        "generate": lambda: ["--checkpoint", inp["vae"]["checkpoint"], "--out", out["poses"]],
        "render": lambda: ["--poses", inp["poses"]["poses"], "--image_dir", out["frames"],
                           "--label_dir", out["labels"], "--shadow_dir", out["shadows"]],
        "backgrounds": lambda: ["--out_dir", out["folder"]],
        "adain": lambda: ["--data_dir", inp["render"]["data"], "--style_dir", inp["backgrounds"]["folder"],
                          "--annotations", inp["render"]["annotations"], "--checkpoint", out["checkpoint"]],
        "stylize": lambda: ["--checkpoint", inp["adain"]["checkpoint"], "--frames_dir", inp["render"]["frames"],
                            "--annotations", inp["render"]["annotations"], "--shadow_dir", inp["render"]["shadows"],
                            "--backgrounds", inp["backgrounds"]["folder"], "--out_dir", out["folder"]],
        "pose_net": lambda: ["--ann", inp["data"]["annotations"], "--images", inp["data"]["folder"],
                             "--seed", piece.seed, "--checkpoint", out["checkpoint"]],
    }[piece.stage]()
    return REPO / folder, [*python(cmd), *piece.flags, *map(str, paths)]


def python(cmd):
    """The stage's command with this Python for `python` (render.sh gets it through $PYTHON)."""
    words = shlex.split(cmd)
    return [sys.executable, *words[1:]] if words[0] == "python" else words


def shown(folder, argv):
    words = ["python" if w == sys.executable else w for w in argv]
    return f"cd {folder.relative_to(REPO)} && {shlex.join(words)}"


_HELP = {}


def stage_help(stage):
    return help_text(*R.STAGES[stage])


def help_text(folder, cmd):
    """A script's --help text: which flags it has now."""
    if (folder, cmd) not in _HELP:
        argv = [*python(cmd), "--help"]
        res = subprocess.run(argv, cwd=REPO / folder, capture_output=True, text=True,
                             env=dict(os.environ, PYTHON=sys.executable))
        if res.returncode != 0:
            raise UserError(f"{shown(REPO / folder, argv)} failed: {last_line(res.stderr + res.stdout)}")
        _HELP[folder, cmd] = res.stdout + res.stderr
    return _HELP[folder, cmd]


def missing_flags(changes, fields):
    """'--flag (stage)' for each flag of the row that its stage does not have."""
    out = []
    for stage, text in changes.items():
        helptext = stage_help(stage)
        out += [f"--{name} ({shlex.split(R.STAGES[stage][1])[-1]} in {R.STAGES[stage][0]}/)"
                for name, _ in flag_groups(text, fields)
                if not re.search(rf"--{re.escape(name)}\b", helptext)]
    return out


def last_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


class StageFailed(Exception):
    pass


def run_logged(folder, argv, log, what):
    """Run one command with its output in `log`; (exit code, seconds). Ctrl-C or SIGTERM is passed on
    to the stage, once (a trainer or step 3 saves its resume point), and we wait until it has."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {shown(folder, argv)}\n")
        f.flush()
        # its own process group: a terminal's Ctrl-C reaches us alone, and the stage gets exactly one signal
        child = subprocess.Popen(argv, cwd=folder, stdout=f, stderr=subprocess.STDOUT, env=env, process_group=0)
        try:
            rc = child.wait()
        except KeyboardInterrupt as e:
            child.send_signal(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
            child.wait()
            raise Stopped(f"stopped during {what} (its log: {log}); run the same command again to resume: "
                          "finished stages are kept, the stopped one resumes by its own rule") from None
    return rc, time.time() - t0


def run_piece(piece, work_dir, row):
    """Run one piece unless it is done; its record (done.json): command and wall time."""
    d = piece.folder(work_dir)
    done = d / "done.json"
    if done.exists():
        return dict(json.loads(done.read_text()), ran_now=False)
    folder, argv = command(piece, work_dir)
    what = piece.stage + (f" (seed {piece.seed})" if piece.seed is not None else "")
    print(f"[{row}] {what}: {shown(folder, argv)}", flush=True)
    rc, wall = run_logged(folder, argv, d / "log.txt", f"{row}: {what}")
    if rc != 0:
        raise StageFailed(f"{what} failed (exit {rc}): {last_line((d / 'log.txt').read_text())} "
                          f"(log: {d / 'log.txt'})")
    record = {"stage": piece.stage, "command": shown(folder, argv), "wall_s": round(wall, 1),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "load": os.getloadavg()[0]}
    save_json(done, record)
    print(f"[{row}] {what}: done in {wall:.0f} s", flush=True)
    return dict(record, ran_now=True)


# --- scoring ---------------------------------------------------------------------------------------

PCK_LINE = re.compile(r"PCK@0\.05 ([0-9.]+)\s+PCK@0\.1 ([0-9.]+)\s+\((\d+) labelled")
KP_LINE = re.compile(r"^\s+(\w+)\s+([0-9.]+|nan)\s+([0-9.]+|nan)\s+(\d+)\s*$", re.M)
AP_LINE = re.compile(r"AP ([0-9.]+)\s+AP50 ([0-9.]+)\s+AP75 ([0-9.]+)\s+AR ([0-9.]+)")


def figures_from_stdout(text):
    """What evaluate.py prints, as numbers: the PCK line, the per-keypoint table, OKS AP."""
    m = PCK_LINE.search(text)
    if not m:
        raise StageFailed(f"evaluate.py printed no PCK line: {last_line(text)}")
    out = {"pck0.05": float(m.group(1)), "pck0.1": float(m.group(2)), "keypoints": int(m.group(3)),
           "per_keypoint": {k: {"pck0.05": float(a), "pck0.1": float(b), "n": int(n)}
                            for k, a, b, n in KP_LINE.findall(text[m.end():]) if k != "keypoint"}}
    ap = AP_LINE.search(text)
    if ap:
        out.update(zip(("AP", "AP50", "AP75", "AR"), map(float, ap.groups())))
    return out


def saved_figures(path):
    """evaluate.py's --json file, when it holds the overall PCK figures (else None: read its output)."""
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return figures if isinstance(figures, dict) and {"pck0.05", "pck0.1"} <= set(figures) else None


def evaluate(train_piece, work_dir, row_dir, kind, real, n_real):
    """Score one trained network: kind 'real' (the photos, every animal on the sheet) or 'heldout'
    (its own data set's held-out frames). Keeps evaluate.py's JSON (or, while it has no --json, its
    printed figures) and contact sheet in the row's folder; returns the figures."""
    seed = train_piece.seed
    stem = row_dir / f"seed{seed}_{kind}"
    ckpt = outputs(train_piece, work_dir)["checkpoint"]
    argv = [sys.executable, "evaluate.py", "--checkpoint", str(ckpt), "--sheet", f"{stem}_sheet.jpg"]
    if kind == "real":
        argv += ["--real", str(real[0].resolve()), str(real[1].resolve()), "--sheet_n", str(n_real)]
    has_json = re.search(r"--json\b", help_text("pose_net", "python evaluate.py")) is not None
    if has_json:
        argv += ["--json", f"{stem}.json"]
    log = row_dir / "log.txt"
    before = log.stat().st_size if log.exists() else 0
    rc, wall = run_logged(HERE, argv, log, f"{row_dir.name}: evaluate.py ({kind}, seed {seed})")
    text = log.read_text()[before:]
    if rc != 0:
        raise StageFailed(f"evaluate.py --{kind} (seed {seed}) failed (exit {rc}): {last_line(text)} (log: {log})")
    figures = saved_figures(Path(f"{stem}.json")) if has_json else None
    if figures is None:
        figures = figures_from_stdout(text)
        save_json(Path(f"{stem}.json"), dict(figures, note="parsed from evaluate.py's output (it has no --json yet)"))
    return dict(figures, json=f"{stem.name}.json", sheet=f"{stem.name}_sheet.jpg", wall_s=round(wall, 1))


# --- one row ---------------------------------------------------------------------------------------

def real_set(args):
    """(animals, photos, labelled keypoints, sha1) of the --real file."""
    raw = args.real[0].read_bytes()
    try:
        data = json.loads(raw)
        anns = data["annotations"]
        n_kp = sum(sum(1 for v in a["keypoints"][2::3] if v > 0) for a in anns)
        return len(anns), len(data["images"]), n_kp, hashlib.sha1(raw).hexdigest()[:12]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{args.real[0]} is not a COCO keypoint file ({e}): {REAL_NEEDED}") from None


def row_spec(pieces, args, real_sha):
    """What a row's result depends on: reused when all of it is the same."""
    return hashlib.sha1(json.dumps({"pieces": sorted(p.key for p in pieces.values()), "seeds": args.seeds,
                                    "real": real_sha}).encode()).hexdigest()[:12]


def git_state():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def run_row(name, lever, changes, pieces, args, spec, n_real):
    """Every piece of a row (shared ones reused), its seeds scored; the result, saved."""
    row_dir = args.work_dir / "rows" / name
    t0, load0 = time.time(), os.getloadavg()[0]
    records = {}
    for stage, piece in pieces.items():
        for dep in dependencies(piece):
            if dep.key not in records:
                records[dep.key] = run_piece(dep, args.work_dir, name)
    seeds = {}
    for seed in args.seeds:
        train = pieces[f"pose_net/{seed}"]
        seeds[str(seed)] = {"real": evaluate(train, args.work_dir, row_dir, "real", args.real, n_real),
                            "heldout": evaluate(train, args.work_dir, row_dir, "heldout", args.real, n_real),
                            "train_wall_s": records[train.key]["wall_s"]}
    result = {"name": name, "lever": lever, "changes": changes, "spec": spec, "frames": args.frames,
              "smoke": args.smoke, "seeds": seeds,
              "wall_s": round(time.time() - t0, 1),
              "from_scratch_s": round(sum(r["wall_s"] for r in records.values())
                                      + sum(s[k]["wall_s"] for s in seeds.values() for k in ("real", "heldout")), 1),
              "pieces": [{"stage": r["stage"], "key": k, "wall_s": r["wall_s"], "ran_now": r["ran_now"]}
                         for k, r in records.items()],
              "load": [round(load0, 1), round(os.getloadavg()[0], 1)], "code": git_state()}
    save_json(row_dir / "result.json", result)
    return result


def rescore(row, args, n_real):
    """The row's trained networks scored on the real photos again; its result updated."""
    row_dir = args.work_dir / "rows" / row["name"]
    for seed in args.seeds:
        row["result"]["seeds"][str(seed)]["real"] = evaluate(row["pieces"][f"pose_net/{seed}"], args.work_dir,
                                                             row_dir, "real", args.real, n_real)
    save_json(row_dir / "result.json", row["result"])


def saved_result(name, spec, work_dir):
    path = work_dir / "rows" / name / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("spec") == spec else None


# --- the table -------------------------------------------------------------------------------------

def mean(values):
    return sum(values) / len(values)


def seed_figures(result, kind, key):
    return [result["seeds"][s][kind][key] for s in sorted(result["seeds"], key=int)]


def cell(values):
    """'0.312 / 0.344 / **0.328**': each seed, then the mean."""
    return " / ".join(f"{v:.3f}" for v in values) + f" / **{mean(values):.3f}**"


def minutes(seconds):
    return f"{seconds / 60:.1f} min"


def changes_cell(changes, fields):
    if not changes:
        return "(the baseline)"
    return "<br>".join(f"{R.STAGES[s][0]}/{shlex.split(R.STAGES[s][1])[-1]} `{shown_flags(t, fields)}`"
                       for s, t in changes.items())


def shown_flags(text, fields):
    """A row's flags as the table shows them: the frame counts filled in, local paths by their flag."""
    local = {"pasyn_poses": "PASYN_POSES", "background_photos": "PHOTOS", "background_ann": "PHOTOS_ANN"}
    return text.format(**{**{k: v for k, v in fields.items()}, **local})


def data_sha1(stylize_piece, work_dir):
    """One checksum of a data set's images (its annotations.json names the decoder, so it is left out),
    kept in its done.json: a lever that changes no pixel shows as such."""
    done = stylize_piece.folder(work_dir) / "done.json"
    record = json.loads(done.read_text())
    if "data_sha1" not in record:
        h = hashlib.sha1()
        for path in sorted(outputs(stylize_piece, work_dir)["folder"].glob("*.jpg")):
            h.update(path.name.encode() + path.read_bytes())
        record["data_sha1"] = h.hexdigest()
        save_json(done, record)
    return record["data_sha1"]


def verdict(delta):
    if abs(delta) <= COUNTS:
        return "within the seed spread"
    return "**better**" if delta > 0 else "**worse**"


def table_lines(rows, args, fields, real_info):
    n_animals, n_photos, n_kp, _ = real_info
    seeds = " / ".join(f"seed {s}" for s in args.seeds)
    done = [r["result"] for r in rows if r["result"]]
    base = rows[0]["result"]
    base_mean = base and mean(seed_figures(base, "real", "pck0.1"))
    cmd = ["python", "ablate.py", "--real", "ANN", "DIR", "--frames", str(args.frames),
           "--seeds", *map(str, args.seeds)]
    cmd += ["--pasyn_poses", "PASYN_POSES"] if args.pasyn_poses else []
    cmd += ["--background_photos", "PHOTOS", "PHOTOS_ANN"] if args.background_photos else []
    cmd += ["--smoke"] if args.smoke else []
    lines = [
        "# Ablation: every realism lever on real zebra photos" + (" (SMOKE TEST: not a measurement)" if args.smoke else ""),
        "",
        "What is measured: a pose network (step 6, `pose_net/train.py` with its own defaults, the same for every",
        f"row) is trained only on each row's synthetic data set, once per training seed ({seeds}), and scored on",
        f"real photos: **{n_animals} zebras in {n_photos} real photos, {n_kp} labelled keypoints**"
        + (f" ({args.real_note})" if args.real_note else "") + ". PCK@0.1 and PCK@0.05: a keypoint",
        "counts as found within 0.1 / 0.05 x the longer side of its zebra's bbox (flip test). Each cell gives",
        "every seed's figure, then their mean in bold. The synthetic column is PCK@0.1 on the held-out tenth of",
        "the row's own data set (mean over the seeds): how well the set is learned, not how real it is.",
        "",
        f"How to read it: one training seed moves real PCK by about ±{SEED_SPREAD:.2f} (a few hundred keypoints),",
        f"so a lever counts when the mean moves by more than {COUNTS:.2f} from the baseline's. A lever is kept only",
        "when it raises real PCK over the seeds, whatever colour metrics say.",
        "",
        f"Screening at **{args.frames:,} frames** per data set (the Quick Start makes 3,000): a lever that moves",
        "little here may still matter at full size, and one that moves a lot is worth confirming there.",
        "The baseline is the Quick Start's pipeline (its numbered commands, README) at that size; every other row",
        "runs the same commands with the flags it names. Stages a row does not change are shared with the",
        "baseline. The AdaIN decoder is re-trained only for rows that change its flags or the backgrounds (on",
        "that row's renders); a row that changes the poses or the renders stylizes with the baseline's decoder.",
        "",
        "The command (from `pose_net/`; ANN DIR = the real photos' COCO labels and their folder):",
        "",
        "```bash",
        shlex.join(cmd),
        "```",
        "",
        f"Run on {cpu_name()}, {os.cpu_count()} cores, no GPU, the machine shared with other work (each row's load",
        "average is in its result file); rows run one after another. Time per row: what the row ran itself",
        "(stages shared with earlier rows were done already), and in brackets all of its stages from scratch.",
        f"Total so far: {minutes(sum(r['wall_s'] for r in done))} for {len(done)} rows. "
        f"Code: {', '.join(sorted({r['code'] for r in done})) or 'n/a'}.",
        "Per row and seed, `evaluate.py`'s figures (JSON, per keypoint) and the real-photo contact sheet are in",
        "`WORK_DIR/rows/<row>/`, every stage's command and log in `WORK_DIR/pieces/` (the photos are never committed).",
        "",
        f"| row | lever | flags that differ from the baseline | real PCK@0.1 ({seeds} / mean) | Δ mean vs baseline "
        f"| real PCK@0.05 ({seeds} / mean) | held-out synthetic PCK@0.1 | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name, result = row["name"], row["result"]
        flags = changes_cell(row["changes"], fields)
        if not result:
            lines.append(f"| {name} | {row['lever']} | {flags} | {row.get('estimate') or row['why']} | | | | |")
            continue
        real01 = seed_figures(result, "real", "pck0.1")
        delta = "" if name == "baseline" or base_mean is None else \
            f"{mean(real01) - base_mean:+.3f} ({verdict(mean(real01) - base_mean)})"
        if name != "baseline" and rows[0]["result"] and \
                data_sha1(row["pieces"]["stylize"], args.work_dir) == data_sha1(rows[0]["pieces"]["stylize"], args.work_dir):
            delta += "; its data set is byte for byte the baseline's"
        lines.append(f"| {name} | {row['lever']} | {flags} | {cell(real01)} | {delta} "
                     f"| {cell(seed_figures(result, 'real', 'pck0.05'))} "
                     f"| {mean(seed_figures(result, 'heldout', 'pck0.1')):.3f} "
                     f"| {minutes(result['wall_s'])} ({minutes(result['from_scratch_s'])}) |")
    return lines + bias_lines(rows) + failure_lines(rows)


BIAS_GROUPS = [("nose", ["nose"]), ("neck", ["neck"]), ("root of tail", ["root_of_tail"]),
               ("front paws", ["left_front_paw", "right_front_paw"]), ("back paws", ["left_back_paw", "right_back_paw"])]


def bias_cell(result, keypoints):
    """'forward / down': the median offsets evaluate.py gives, averaged over seeds and the keypoints."""
    out = []
    for axis in ("bias_forward", "bias_down"):
        values = [kp[axis] for s in result["seeds"].values() for name, kp in s["real"]["per_keypoint"].items()
                  if name in keypoints and kp.get(axis) is not None]
        out.append(f"{mean(values):+.3f}" if values else "n/a")
    return " / ".join(out)


def bias_lines(rows):
    """Where the predictions sit on the real photos, per row (once evaluate.py gives the bias)."""
    rows = [r for r in rows if r["result"] and any(kp.get("bias_down") is not None for s in r["result"]["seeds"].values()
                                                   for kp in s["real"]["per_keypoint"].values())]
    if not rows:
        return []
    return ["", "Median offset of the predictions from the real labels (evaluate.py's bias), in units of the longer",
            "bbox side, forward (toward the head) / down (the image's), averaged over the seeds and the keypoints named:",
            "", "| row | " + " | ".join(g for g, _ in BIAS_GROUPS) + " |", "|---" * (len(BIAS_GROUPS) + 1) + "|",
            *(f"| {r['name']} | " + " | ".join(bias_cell(r["result"], kps) for _, kps in BIAS_GROUPS) + " |"
              for r in rows)]


def failure_lines(rows):
    """How the missed keypoints went wrong on the real photos, per row (evaluate.py's failure kinds):
    each kind's share of the misses, summed over the seeds."""
    rows = [r for r in rows if r["result"] and all("failure_kinds" in s["real"] for s in r["result"]["seeds"].values())]
    if not rows:
        return []
    kinds = list(next(iter(rows[0]["result"]["seeds"].values()))["real"]["failure_kinds"])[:-2]
    lines = ["", "How the keypoints missed at PCK@0.1 on the real photos went wrong (evaluate.py's failure kinds;",
             "share of the misses, both seeds together):", "",
             "| row | missed | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 2) + "|"]
    for r in rows:
        total = {k: sum(s["real"]["failure_kinds"][k] for s in r["result"]["seeds"].values()) for k in kinds + ["missed", "labelled"]}
        lines.append(f"| {r['name']} | {total['missed']} of {total['labelled']} | "
                     + " | ".join(f"{total[k] / max(1, total['missed']):.0%}" for k in kinds) + " |")
    return lines


NOTES = "<!-- notes: ablate.py rewrites everything above this line and keeps what follows -->"


def write_table(path, lines):
    """The table, atomically; people's notes after the NOTES line of the old file are kept."""
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES):] if NOTES in old else NOTES + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n\n" + notes)


# --- main ------------------------------------------------------------------------------------------

def plan(args, fields, real_sha):
    """Every row of the table: name, lever, changes, and its pieces and spec, or why it cannot run."""
    rows = []
    for name, lever, changes in R.ROWS:
        row = {"name": name, "lever": lever, "changes": changes, "pieces": None, "result": None}
        missing, flags = missing_fields(changes, fields), None
        if not missing:
            flags = missing_flags(changes, fields)
        if missing:
            row["why"] = "not run: " + SKIP_WHY.get(missing[0], f"needs {missing[0]}")
        elif flags:
            row["why"] = f"not run: no flag {', '.join(flags)} yet"
        else:
            row["pieces"] = row_pieces(changes, fields, args.smoke, args.seeds)
            row["spec"] = row_spec(row["pieces"], args, real_sha)
            row["result"] = saved_result(name, row["spec"], args.work_dir)
            row["why"] = "not run yet"
        rows.append(row)
    return rows


def frames_of(piece):
    """The frames a piece works through (None: the VAE and the backgrounds do not scale with them)."""
    if piece.stage in ("generate", "render"):
        return int(flag_value(piece.flags, "n_frames"))
    for name in ("render", "data"):
        if name in piece.inputs:
            return frames_of(piece.inputs[name])
    return None


def pixels_of(piece):
    if piece.stage not in ("render", "adain", "stylize"):
        return None
    return int(flag_value(piece.flags, "height")) * int(flag_value(piece.flags, "width"))


def flag_value(flags, name):
    for i, t in enumerate(flags):
        if t.startswith(f"--{name}="):
            return t.split("=", 1)[1]
        if t == f"--{name}" and i + 1 < len(flags):
            return flags[i + 1]
    return None


def estimate_s(row, baseline, work_dir):
    """Seconds a row's pieces not yet done should take: the baseline's time for the same stage,
    scaled by frames and pixels, and the baseline's scoring time. None before the baseline has run."""
    if not baseline["result"]:
        return None
    reference = {p.stage: p for p in baseline["pieces"].values()}
    total = sum(s[k]["wall_s"] for s in baseline["result"]["seeds"].values() for k in ("real", "heldout"))
    todo = {d.key: d for p in row["pieces"].values() for d in dependencies(p)
            if not (d.folder(work_dir) / "done.json").exists()}
    for piece in todo.values():
        ref = reference[piece.stage]
        done = ref.folder(work_dir) / "done.json"
        if not done.exists():
            return None
        scale = 1.0
        for measure in (frames_of, pixels_of):
            if measure(piece):
                scale *= measure(piece) / measure(ref)
        total += json.loads(done.read_text())["wall_s"] * scale
    return total


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    real_info = real_set(args)
    fields = fields_of(args)
    missing = missing_flags(R.BASELINE, fields)
    if missing:
        raise UserError(f"the baseline's flag {missing[0]} does not exist: update ablation_rows.BASELINE")
    rows = plan(args, fields, real_info[3])
    baseline = rows[0]
    wanted = set(args.rows or [r["name"] for r in rows])
    failed = []

    def update_table():
        for row in rows:
            if row["pieces"] and not row["result"] and row["why"] == "not run yet":
                est = estimate_s(row, baseline, args.work_dir)
                row["estimate"] = est and f"not run yet (about {minutes(est)})"
        write_table(args.table, table_lines(rows, args, fields, real_info))

    for row in rows:
        name = row["name"]
        if name not in wanted:
            continue
        if row["result"] and args.rescore:
            rescore(row, args, real_info[0])
        if row["result"] or not row["pieces"]:
            print(f"[{name}] " + ("done before: reusing its result" if row["result"] else row["why"]), flush=True)
            continue
        est = estimate_s(row, baseline, args.work_dir)
        print(f"[{name}] {row['lever']}" + (f": about {minutes(est)} (the baseline's stage times, scaled)"
                                             if est else ""), flush=True)
        try:
            row["result"] = run_row(name, row["lever"], row["changes"], row["pieces"], args, row["spec"], real_info[0])
            r = row["result"]
            print(f"[{name}] real PCK@0.1 {cell(seed_figures(r, 'real', 'pck0.1'))}, {minutes(r['wall_s'])}", flush=True)
        except StageFailed as e:
            row["why"] = f"failed: {e}"
            failed.append(name)
            print(f"[{name}] {e}", file=sys.stderr, flush=True)
        update_table()
    update_table()
    print(f"wrote {args.table}")
    if failed:
        raise UserError(f"{len(failed)} row(s) failed: {' '.join(failed)} (each error is in the table and its log)")


if __name__ == "__main__":
    run_main(main)
