"""cd pose_net && python benchmark.py [train.py flags]

Step 6's budget: trains the pose network with train.py's defaults (or the flags given, passed on
to train.py) into a fresh checkpoint in a temporary folder, and reports wall time, CPU time, peak
memory and the held-out PCK (flip test), with the CPU, its core count and the load average before
and after, so a figure taken on a busy machine says so. The target on a 2-core CPU: the 3,000
frames of the Quick Start at 64x64 in <= 5 min, held-out PCK@0.1 >= 0.85.
"""
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.compute import cpu_name  # noqa: E402
from pasyn.files import UserError, run_main  # noqa: E402

HERE = Path(__file__).resolve().parent
BUDGET_S = 300
TARGET_PCK = 0.85


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("--checkpoint") or a == "--restart" for a in argv):
        raise UserError("benchmark.py trains into a temporary checkpoint: leave out --checkpoint/--restart")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pose_net_bench_") as tmp:
        t0 = time.perf_counter()
        # train.py as a user runs it (its progress bars, on stderr, stream through)
        proc = subprocess.run([sys.executable, str(HERE / "train.py"), *argv,
                               "--checkpoint", str(Path(tmp) / "checkpoint.pt")],
                              cwd=HERE, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
    print(proc.stdout, end="")
    if proc.returncode:
        raise UserError(f"train.py failed (exit {proc.returncode})")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, peak_gb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2 ** 20
    load1 = os.getloadavg()
    out = {}
    found = re.search(r"held-out PCK@0.05 ([0-9.]+), PCK@0.1 ([0-9.]+)", proc.stdout)
    if found:
        out = {"pck05": float(found.group(1)), "pck10": float(found.group(2))}
    print()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average {load0[0]:.1f} before, {load1[0]:.1f} after "
          f"({'busy: other work shared the cores' if max(load0[0], load1[0]) > 0.5 * (os.cpu_count() or 1) + 0.5 else 'quiet'})")
    print(f"train.py {' '.join(argv) or '(defaults)'}")
    print(f"  wall {wall:.0f} s (budget {BUDGET_S} s: {'within' if wall <= BUDGET_S else 'OVER'}), "
          f"CPU {cpu:.0f} s, peak memory {peak_gb:.2f} GB")
    if "pck10" in out:
        print(f"  held-out PCK@0.1 {out['pck10']:.3f} (target {TARGET_PCK}: "
              f"{'met' if out['pck10'] >= TARGET_PCK else 'NOT met'}), PCK@0.05 {out['pck05']:.3f} "
              "(threshold x the longer bbox side, flip test)")
    return {"wall_s": wall, "cpu_s": cpu, **out}


if __name__ == "__main__":
    run_main(main)
