"""cd pose_net && python recipe.py --real ANN DIR [--synthetic ANN DIR] [--seeds 0 1] [--work_dir DIR] [--out FILE]
   cd pose_net && python recipe.py --real ANN DIR --final CHECKPOINT

Step 6 with a few labelled photos of your own: which way of using them works best, measured, and the
final model trained that way.

The measurement is a k-fold cross-validation over the photos (K_FOLDS = 5, split BY PHOTO with a
seeded shuffle, so the zebras of one photo are never on both sides). For every training --seed and
fold, train.py trains
  (a) on the training folds' photos alone (--repeat, so it takes as many steps as the synthetic set),
  (b) on the synthetic set alone (once per seed: it never sees a photo),
  (c) on both: the synthetic set with the training folds' photos mixed in (--extra),
  (d) on the synthetic set, then fine-tuned on the training folds' photos (--init from (b)),
and evaluate.py scores each on the held-out fold's photos. The table gives PCK@0.1 and PCK@0.05 (a
keypoint is found within 0.1 / 0.05 x the longer side of its zebra's bbox) as the mean over the folds
with their min..max, and OKS AP, per seed and over all seeds, with every arm's exact settings. It is
printed, written to WORK_DIR/recipe.md (WORK_DIR/final.md with --final) and to --out FILE.

--final CHECKPOINT trains the recommended arm (RECOMMENDED below, chosen from the measured table) on
the synthetic set and ALL the labelled photos, and prints where it is and that arm's cross-validated
figure (measured first if WORK_DIR does not hold it yet; --seeds decides over how many seeds).

Everything goes under --work_dir (checkpoints, losses.jpg, logs of train.py and evaluate.py, scores,
contact sheets). Running the same command again reuses every finished run and resumes an interrupted
one (train.py's own resume); Ctrl-C stops cleanly.
"""
import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import DEVICES, PRECISIONS, choose_device  # noqa: E402
from pasyn.files import (STYLIZED_DIR, Stopped, Terminated, UserError, atomic_path, check_seed,  # noqa: E402
                         check_writable, run_main, save_json)
from pasyn.streams import stream  # noqa: E402

import pose_data as D  # noqa: E402

HERE = Path(__file__).resolve().parent

# --- the recipe's settings: picked once, before measuring, and stated in the table ----------------
K_FOLDS = 5
SEEDS = (0, 1)
SPLIT_SEED = 0            # the fold split; the same for every training seed, so the seeds compare alike
SYNTH_VAL_FRACTION = 0.1  # (b), (c): train.py's default hold-out of the synthetic set (a sanity figure in its log)
REAL_SHARE = 0.25         # (c): share of each epoch's draws that are photos; --extra_weight follows from it
FINETUNE_EPOCHS = 5       # (d): epochs of fine-tuning on the photos...
FINETUNE_DRAWS = 0.5      # ...each as many draws as this share of a synthetic epoch (--repeat follows)
FINETUNE_LR = 5e-4        # (d): a quarter of train.py's peak: adapt to the photos, keep what (b) learned
RECOMMENDED = "d"         # the arm --final trains: the best on realzebra-dev (see the README's recipe table)

ARMS = {
    "a": "real photos only",
    "b": "synthetic only",
    "c": "synthetic + real photos mixed (--extra)",
    "d": "synthetic, then fine-tuned on the real photos (--init)",
}
MADE_BY_SYNTH = "step 5: cd style_transfer && python stylize.py"


def parse_args(argv):
    p = argparse.ArgumentParser(description="Step 6 with your labelled photos: the few-shot recipe, "
                                            "cross-validated by photo, and the final model.")
    p.add_argument("--real", nargs=2, metavar=("ANN", "DIR"), type=Path, required=True,
                   help="your labelled photos: a COCO keypoint file (AP-10K's zebra keypoints) and its image folder")
    p.add_argument("--synthetic", nargs=2, metavar=("ANN", "DIR"), type=Path,
                   default=[STYLIZED_DIR / "annotations.json", STYLIZED_DIR],
                   help="the synthetic set (default: step 5's stylized_images/annotations.json and its folder)")
    p.add_argument("--category", default=None, help="category name or id in a multi-category --real file")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help=f"training seeds (default: {' '.join(map(str, SEEDS))})")
    p.add_argument("--arms", default="abcd", help="which arms to measure, e.g. cd (default: abcd)")
    p.add_argument("--folds", type=int, default=K_FOLDS, help=f"k of the k-fold split (default: {K_FOLDS})")
    p.add_argument("--split_seed", type=int, default=SPLIT_SEED,
                   help=f"seed of the photo shuffle that makes the folds (default: {SPLIT_SEED})")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of (a), (b), (c) (default: train.py's); a quick look, not the measured recipe")
    p.add_argument("--final", type=Path, default=None, metavar="CHECKPOINT",
                   help=f"train the recommended arm ({RECOMMENDED}) on the synthetic set and all the photos "
                        "into CHECKPOINT (after its cross-validation, unless WORK_DIR holds it)")
    p.add_argument("--work_dir", type=Path, default=HERE / "runs" / "recipe",
                   help="every checkpoint, log and score of the runs (default: pose_net/runs/recipe)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    p.add_argument("--device", choices=DEVICES, default="auto", help="passed to train.py and evaluate.py")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="passed to train.py")
    p.add_argument("--threads", type=int, default=1, help="passed to train.py and evaluate.py (default: 1)")
    args = p.parse_args(argv)
    # train.py and evaluate.py run from pose_net/: every path they get is absolute
    args.real = [x.resolve() for x in args.real]
    args.synthetic = [x.resolve() for x in args.synthetic]
    args.final = args.final.resolve() if args.final else None
    for s in [args.split_seed, *args.seeds]:
        check_seed(s, "--seeds")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed")
    args.arms = "".join(sorted(set(args.arms)))
    if not args.arms or set(args.arms) - set(ARMS):
        raise UserError(f"--arms {args.arms!r}: pick from a, b, c, d")
    if args.final:
        args.arms = RECOMMENDED
    if args.folds < 2:
        raise UserError(f"--folds {args.folds} must be >= 2")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} must be >= 1")
    if args.threads < 0:
        raise UserError(f"--threads {args.threads} must be >= 0")
    return args


# ---------------------------------------------------------------- folds

def fold_photos(image_ids, k, seed):
    """k lists of image ids: a seeded shuffle of the photos cut into k near-equal folds."""
    ids = sorted(image_ids)
    if len(ids) < k:
        raise UserError(f"{len(ids)} labelled photos cannot make {k} folds (--folds)")
    order = stream(seed, "recipe_folds").permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(order, k)]


def coco_subset(data, cat, image_ids):
    """The COCO dict of these images and their animals of the category."""
    keep = set(image_ids)
    return {"images": [im for im in data["images"] if im.get("id") in keep],
            "annotations": [a for a in data["annotations"] if a.get("image_id") in keep
                            and a.get("category_id") == cat["id"]],
            "categories": [cat]}


def write_folds(args, work):
    """Writes folds/fold{k}_train.json and _test.json; returns [(train path, test path, n train animals)]
    and the number of labelled animals and photos."""
    ann, folder = args.real
    cat, records = D.load_keypoint_set(ann, folder, args.category)
    data = D.read_json(ann)
    folds = fold_photos({r["image_id"] for r in records}, args.folds, args.split_seed)
    names = {im.get("id"): im.get("file_name") for im in data["images"]}
    out, plan = [], []
    for k, test_ids in enumerate(folds, start=1):
        train_ids = sorted(set(i for f in folds for i in f) - set(test_ids))
        train_path, test_path = work / "folds" / f"fold{k}_train.json", work / "folds" / f"fold{k}_test.json"
        save_json(train_path, coco_subset(data, cat, train_ids))
        save_json(test_path, coco_subset(data, cat, test_ids))
        n_train = sum(r["image_id"] in set(train_ids) for r in records)
        out.append((train_path, test_path, n_train))
        plan.append({"fold": k, "test_photos": [names[i] for i in test_ids], "train_animals": n_train,
                     "test_animals": len(records) - n_train})
    save_json(work / "folds" / "folds.json", {"split_seed": args.split_seed, "folds": plan})
    return cat, out, len(records), len({r["image_id"] for r in records})


def synthetic_animals(args):
    """How many synthetic animals train.py trains on (its hold-out taken off)."""
    _, records = D.load_keypoint_set(*args.synthetic, made_by=MADE_BY_SYNTH)
    return len(records) - sum(1 for r in records
                              if r["image_id"] in set(D.held_out_image_ids(records, SYNTH_VAL_FRACTION, 0)))


# ---------------------------------------------------------------- the arms' train.py flags

def arm_flags(arm, n_synth, n_real, real_train, real_dir, args, init=None):
    """train.py's flags for an arm (the data and the arm's settings; seed and paths are added later)."""
    synth = ["--ann", args.synthetic[0], "--images", args.synthetic[1], "--val_fraction", SYNTH_VAL_FRACTION]
    epochs = ["--epochs", args.epochs] if args.epochs else []
    if arm == "a":  # alone, the photos are drawn often enough to get the synthetic set's steps per epoch
        return ["--ann", real_train, "--images", real_dir, "--val_fraction", 0,
                "--repeat", max(1, round(n_synth / n_real)), *epochs]
    if arm == "b":
        return [*synth, *epochs]
    if arm == "c":
        weight = round(REAL_SHARE / (1 - REAL_SHARE) * n_synth / n_real, 2)
        return [*synth, "--extra", real_train, real_dir, "--extra_weight", weight, *epochs]
    return ["--ann", real_train, "--images", real_dir, "--val_fraction", 0, "--init", init,
            "--repeat", max(1, round(FINETUNE_DRAWS * n_synth / n_real)), "--epochs", FINETUNE_EPOCHS,
            "--lr", FINETUNE_LR]


def settings_line(arm, n_synth, n_real_typical, args):
    """The arm's flags in words for the table (n_real: the training folds' animals, typically)."""
    flags = arm_flags(arm, n_synth, n_real_typical, "TRAIN_FOLDS.json", "DIR", args, init="b.pt")
    text = " ".join(str(f) for f in flags)
    for path in (str(args.synthetic[0]), str(args.synthetic[1])):
        text = text.replace(path, "SYNTH" if path.endswith(".json") else "SYNTH_DIR")
    return f"`{text}`" + ("" if args.epochs or arm == "d" else " (train.py's defaults otherwise: 10 epochs, lr 0.002)")


# ---------------------------------------------------------------- running train.py and evaluate.py

def run_logged(cmd, log, what):
    """One script run, its output in `log`; Ctrl-C reaches it too (it saves), SIGTERM is passed on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=HERE)
        try:
            rc = proc.wait()
        except KeyboardInterrupt as e:
            if isinstance(e, Terminated):  # a terminal's Ctrl-C reached the child already; SIGTERM did not
                proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise Stopped(f"{what} stopped (its log: {log}); run the same command to resume") from None
    if rc:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        raise UserError(f"{what} failed (exit {rc}): {lines[-1] if lines else ''} (log: {log})")


def run_once(cmd, folder, name, what):
    """Runs cmd unless folder/<name>.done records the same command; returns its wall seconds."""
    done = folder / f"{name}.done"
    same = [Path(cmd[1]).name, *cmd[2:]]  # the script by name: a moved checkout or another python is the same run
    if done.exists():
        record = json.loads(done.read_text())
        if record.get("command") == same:
            return record["wall_s"], True
    t0 = time.perf_counter()
    run_logged(cmd, folder / f"{name}.log", what)
    wall = time.perf_counter() - t0
    save_json(done, {"command": same, "wall_s": wall})
    return wall, False


def device_flags(args, train=True):
    flags = ["--device", args.device, "--threads", str(args.threads)]
    return flags + (["--precision", args.precision] if train else [])


def train(flags, seed, folder, args, what):
    cmd = [sys.executable, str(HERE / "train.py"), *map(str, flags), "--seed", str(seed),
           "--checkpoint", str(folder / "checkpoint.pt"), *device_flags(args)]
    return run_once(cmd, folder, "train", what)


def score(checkpoint, test_ann, folder, args, what):
    cmd = [sys.executable, str(HERE / "evaluate.py"), "--checkpoint", str(checkpoint),
           "--real", str(test_ann), str(args.real[1]), "--json", str(folder / "scores.json"),
           "--sheet", str(folder / "sheet.jpg"), *device_flags(args, train=False)]
    if args.category:
        cmd += ["--category", args.category]
    run_once(cmd, folder, "evaluate", what)
    return json.loads((folder / "scores.json").read_text())


# ---------------------------------------------------------------- the cross-validation

def cross_validate(args, work, n_synth, folds):
    """{arm: {seed: [per-fold scores]}} and the wall seconds of every training run."""
    arms = sorted(set(args.arms) | ({"b"} if "d" in args.arms else set()))
    scored = {arm: {s: [] for s in args.seeds} for arm in args.arms}
    walls = {arm: [] for arm in arms}
    real_dir = args.real[1]
    for seed in args.seeds:
        b_dir = work / f"seed{seed}" / "b"
        if "b" in arms:
            wall, reused = train(arm_flags("b", n_synth, 1, None, None, args), seed, b_dir, args,
                                 f"(b) seed {seed}")
            walls["b"].append(wall)
            print(f"(b) seed {seed}: {'trained before' if reused else 'trained'} ({wall:.0f} s)", flush=True)
        for k, (train_ann, test_ann, n_real) in enumerate(folds, start=1):
            for arm in "acd":
                if arm not in arms:
                    continue
                folder = work / f"seed{seed}" / f"fold{k}" / arm
                flags = arm_flags(arm, n_synth, n_real, train_ann, real_dir, args, init=b_dir / "checkpoint.pt")
                wall, reused = train(flags, seed, folder, args, f"({arm}) seed {seed} fold {k}")
                walls[arm].append(wall)
            for arm in args.arms:
                folder = work / f"seed{seed}" / f"fold{k}" / arm
                ckpt = (b_dir if arm == "b" else folder) / "checkpoint.pt"
                s = score(ckpt, test_ann, folder, args, f"scoring ({arm}) seed {seed} fold {k}")
                scored[arm][seed].append(s)
                print(f"({arm}) seed {seed} fold {k}/{len(folds)}: PCK@0.1 {s['pck0.1']:.3f}  "
                      f"PCK@0.05 {s['pck0.05']:.3f}  ({s['n']} zebras)", flush=True)
    return scored, walls


def summary(values):
    v = np.asarray(values, float)
    return f"{v.mean():.3f} ({v.min():.3f}..{v.max():.3f})"


def arm_means(scored, arm, key="pck0.1"):
    """Mean over folds, per seed."""
    return [float(np.mean([s[key] for s in folds])) for folds in scored[arm].values()]


def table(args, scored, walls, n_synth, folds, n_animals, n_photos):
    """The markdown report: figures per arm and seed, the settings, the verdict."""
    n_typ = int(round(np.mean([n for _, _, n in folds])))
    lines = [f"## Few-shot recipe: {len(folds)}-fold cross-validation by photo",
             "",
             f"Real set: {args.real[0]} ({n_animals} zebras in {n_photos} photos; folds by photo, split seed "
             f"{args.split_seed}). Synthetic set: {args.synthetic[0]} ({n_synth} animals trained on). "
             "PCK@a: a keypoint is found within a x the longer side of its zebra's bbox; each figure is the "
             "mean over the held-out folds (min..max over folds), flip test; OKS AP with AP-10K's sigmas.",
             "",
             "| arm | seed | PCK@0.1 | PCK@0.05 | OKS AP | train wall s (mean per run) |",
             "|---|---|---|---|---|---|"]
    for arm in args.arms:
        wall = f"{np.mean(walls[arm]):.0f}" if walls.get(arm) else ""
        for seed, per_fold in scored[arm].items():
            lines.append(f"| ({arm}) {ARMS[arm]} | {seed} | {summary([s['pck0.1'] for s in per_fold])} | "
                         f"{summary([s['pck0.05'] for s in per_fold])} | "
                         f"{np.mean([s.get('AP', np.nan) for s in per_fold]):.3f} | {wall} |")
        if len(args.seeds) > 1:
            m10, m05 = arm_means(scored, arm), arm_means(scored, arm, "pck0.05")
            lines.append(f"| **({arm}) all seeds** | {', '.join(map(str, args.seeds))} | **{np.mean(m10):.3f}** "
                         f"(seeds {min(m10):.3f}..{max(m10):.3f}) | **{np.mean(m05):.3f}** "
                         f"(seeds {min(m05):.3f}..{max(m05):.3f}) | "
                         f"{np.mean([s.get('AP', np.nan) for f in scored[arm].values() for s in f]):.3f} | |")
    lines += ["", f"Settings (train.py flags; n: the training folds' zebras, here {n_typ} in a typical fold, "
                  f"{n_synth} synthetic animals):", ""]
    for arm in args.arms:
        lines.append(f"- ({arm}) {ARMS[arm]}: {settings_line(arm, n_synth, n_typ, args)}")
    if "b" in args.arms or "d" in args.arms:
        lines.append("- (b) is trained once per seed (it never sees a photo) and scored on every fold; "
                     "(d) starts from it.")
    lines.append(f"- (c): photos are {REAL_SHARE:.0%} of each epoch's draws (--extra_weight = "
                 f"{REAL_SHARE:g} / {1 - REAL_SHARE:g} x synthetic / n); (a): --repeat = synthetic / n; "
                 f"(d): --repeat = {FINETUNE_DRAWS:g} x synthetic / n, {FINETUNE_EPOCHS} epochs, lr {FINETUNE_LR:g}.")
    lines += ["", verdict(args, scored)]
    return "\n".join(lines) + "\n"


def verdict(args, scored):
    """Which of (c) and (d) wins, and the issue's targets for (c)."""
    mean = {arm: float(np.mean(arm_means(scored, arm))) for arm in args.arms}
    mean05 = {arm: float(np.mean(arm_means(scored, arm, "pck0.05"))) for arm in args.arms}
    out = []
    if "c" in mean and "d" in mean:
        gap = mean["d"] - mean["c"]
        also = f"; PCK@0.05 (c) {mean05['c']:.3f}, (d) {mean05['d']:.3f}"
        if abs(gap) > 0.05:  # one seed moves PCK by about +-0.03 on a few hundred keypoints
            best = "d" if gap > 0 else "c"
            out.append(f"Better by PCK@0.1: ({best}) {ARMS[best]}, {mean[best]:.3f} against "
                       f"{mean['c' if best == 'd' else 'd']:.3f} (mean over seeds and folds{also}).")
        else:
            out.append(f"No clear winner between (c) {mean['c']:.3f} and (d) {mean['d']:.3f} "
                       f"(PCK@0.1, within 0.05: about the seed-to-seed noise{also}).")
    if "a" in mean and "c" in mean:
        out.append(f"Targets for (c): beats (a) by >= 0.10 PCK@0.1: {mean['c'] - mean['a']:+.3f} "
                   f"({'met' if mean['c'] - mean['a'] >= 0.10 else 'not met'}); >= 0.65: {mean['c']:.3f} "
                   f"({'met' if mean['c'] >= 0.65 else 'not met'}).")
    return " ".join(out)


# ---------------------------------------------------------------- the final model

def train_final(args, work, n_synth, n_animals):
    """The recommended arm on the synthetic set and all the photos, into --final; the first seed."""
    seed, real_dir = args.seeds[0], args.real[1]
    all_photos = work / "folds" / "all_photos.json"
    cat, _ = D.load_keypoint_set(*args.real, args.category)
    data = D.read_json(args.real[0])
    save_json(all_photos, coco_subset(data, cat, [im.get("id") for im in data["images"]]))
    flags = arm_flags(RECOMMENDED, n_synth, n_animals, all_photos, real_dir, args,
                      init=work / f"seed{seed}" / "b" / "checkpoint.pt")
    cmd = [sys.executable, str(HERE / "train.py"), *map(str, flags), "--seed", str(seed),
           "--checkpoint", str(args.final), *device_flags(args)]
    wall, _ = run_once(cmd, work / "final", "train", f"the final model ({RECOMMENDED})")
    return wall


def main(argv=None):
    args = parse_args(argv)
    choose_device(args.device)  # --device cuda without a GPU: its one line now, not after the first run
    work = args.work_dir.resolve()
    check_writable(work, *([args.final.parent] if args.final else []))
    n_synth = synthetic_animals(args)
    cat, folds, n_animals, n_photos = write_folds(args, work)
    print(f"{n_animals} labelled zebras in {n_photos} photos, {len(folds)} folds by photo; {n_synth} synthetic "
          f"animals; arms {', '.join(args.arms)}; seeds {' '.join(map(str, args.seeds))}; runs in {work}", flush=True)
    t0 = time.perf_counter()
    scored, walls = cross_validate(args, work, n_synth, folds)
    report = table(args, scored, walls, n_synth, folds, n_animals, n_photos)
    report += (f"\nWall time of the training runs, as each was recorded when it ran: "
               f"{sum(sum(w) for w in walls.values()):.0f} s; of this command: {time.perf_counter() - t0:.0f} s "
               "(finished runs reused).\n")
    save_json(work / ("final_results.json" if args.final else "results.json"),
              {arm: {str(s): v for s, v in per.items()} for arm, per in scored.items()})
    # --final measures its own arm only: its table must not replace the full one
    for path in [work / ("final.md" if args.final else "recipe.md"), *([args.out] if args.out else [])]:
        with atomic_path(path) as tmp:
            tmp.write_text(report)
    print()
    print(report, end="")
    out = {"scores": scored, "report": report}
    if args.final:
        wall = train_final(args, work, n_synth, n_animals)
        m10 = arm_means(scored, RECOMMENDED)
        m05 = arm_means(scored, RECOMMENDED, "pck0.05")
        print(f"\nfinal model: {args.final} ({RECOMMENDED}) {ARMS[RECOMMENDED]}, all {n_animals} labelled zebras, "
              f"seed {args.seeds[0]}, trained in {wall:.0f} s")
        print(f"cross-validated ({len(folds)} folds by photo, seeds {' '.join(map(str, args.seeds))}): "
              f"PCK@0.1 {np.mean(m10):.3f}, PCK@0.05 {np.mean(m05):.3f} on photos it had not seen")
        out["final"] = str(args.final)
    return out


if __name__ == "__main__":
    run_main(main)
