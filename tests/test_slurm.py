"""blender/render_array.sbatch under a real SLURM: a one-node cluster (Debian's slurm-wlm, with munge)
started inside this machine, a 2-task array on a tiny render, the shards merged, and the result
compared bit for bit with one process rendering the whole set.

Needs root and the packages (`apt-get install -y slurm-wlm munge`; .ci/run installs them); skipped with
the reason otherwise. The cluster has its own munge key and socket, ports, spool and state folders in a
temporary folder, and is shut down at the end.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BLENDER_DIR = REPO / "blender"
sys.path.insert(0, str(REPO))
from pasyn import shards  # noqa: E402
from pasyn.files import save_npy  # noqa: E402
from conftest import blender_benchmark  # noqa: E402

N_FRAMES, SIZE = 8, 32
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


def why_no_slurm():
    if not sys.platform.startswith("linux"):
        return "SLURM test runs on Linux only"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"no {', '.join(missing)} (apt-get install -y slurm-wlm munge; .ci/run installs them)"
    if os.geteuid() != 0:
        return "starting slurmd and munged needs root"
    if not (BLENDER_DIR / "custom_zebra.blend").exists():
        return "no blender/custom_zebra.blend"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(why_no_slurm() is not None, reason=str(why_no_slurm()))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line():
    """This machine as slurmd sees it (NodeName=... CPUs=... RealMemory=...): its real CPUs and memory."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("NodeName="))


def slurm_conf(d, node):
    name = node.split()[0].split("=", 1)[1]
    return "\n".join([
        "ClusterName=pasyntest", f"SlurmctldHost={name}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={d / 'munge' / 'sock'}",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
        # no cgroups in a container: plain process tracking, no task binding, no accounting
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
        "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU_Memory",
        "ReturnToService=2",
        f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
        f"PartitionName=pasyn Nodes={name} Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n"


def wait_for(check, seconds, what, logs=()):
    end = time.time() + seconds
    while time.time() < end:
        if check():
            return
        time.sleep(0.5)
    tails = "".join(f"\n--- {p}:\n" + Path(p).read_text()[-2000:] for p in logs if Path(p).exists())
    raise AssertionError(f"timed out waiting for {what}{tails}")


def pid_alive(pid_file):
    try:
        os.kill(int(Path(pid_file).read_text().split()[0]), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def cluster():
    """A running one-node SLURM; yields the environment for its client commands."""
    # not under pytest's tmp folder: munged wants every folder above its socket searchable by all
    d = Path(tempfile.mkdtemp(prefix="pasyn-slurm-"))
    for sub in ("munge", "state", "spool"):
        (d / sub).mkdir()
    os.chmod(d, 0o755)
    key = d / "munge" / "key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    munge = ["munged", f"--socket={d / 'munge' / 'sock'}", f"--key-file={key}", f"--pid-file={d / 'munge' / 'pid'}",
             f"--log-file={d / 'munge' / 'log'}", f"--seed-file={d / 'munge' / 'seed'}"]
    conf = d / "slurm.conf"
    conf.write_text(slurm_conf(d, node_line()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = [d / "slurmctld.log", d / "slurmd.log", d / "munge" / "log"]
    try:
        subprocess.run(munge, check=True, capture_output=True)
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        wait_for(lambda: subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True,
                                        text=True).stdout.strip() == "idle", 60, "the node to be idle", logs)
        yield env
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        for pid_file in (d / "slurmctld.pid", d / "slurmd.pid"):
            try:
                wait_for(lambda: not pid_alive(pid_file), 20, f"{pid_file.name} to stop")
            except AssertionError:  # ours, by its pid file: end it
                os.kill(int(pid_file.read_text().split()[0]), 15)
        subprocess.run(["munged", "--stop", f"--socket={d / 'munge' / 'sock'}"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def poses(tmp_path_factory):
    bench = blender_benchmark()
    path = tmp_path_factory.mktemp("poses") / "poses.npy"
    save_npy(path, bench.synthetic_poses(N_FRAMES, 0))
    return path


def render_env(env):
    """A Blender child's environment: no bin/ of this Python on PATH (Debian's Blender would take its
    prefix and lose its numpy); render.sh falls back to this Python for the pip bpy."""
    ours = (sys.prefix, sys.base_prefix)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(ours)]
    return {**env, "PATH": os.pathsep.join(path), "PYTHON": sys.executable,
            "N_FRAMES": str(N_FRAMES), "HEIGHT": str(SIZE), "WIDTH": str(SIZE)}


def outputs(d):
    coco = json.loads((d / "annotations.json").read_text())
    pngs = {p.name: p.read_bytes() for p in sorted((d / "img").glob("*.png"))}
    return np.load(d / "blender_gt.npy"), np.load(d / "blender_vis.npy"), coco, pngs


def test_array_job_under_slurm_equals_one_process(cluster, poses, tmp_path):
    job, one = tmp_path / "job", tmp_path / "one"
    flags = [f"--poses={poses}", f"--image_dir={job / 'img'}", f"--label_dir={job}"]
    env = render_env(cluster)
    t0 = time.time()
    sub = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--mem=1G",
                          f"--output={tmp_path / 'task_%a.out'}", "--export=ALL", "render_array.sbatch", *flags],
                         cwd=BLENDER_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True,
                                        text=True).stdout.strip(), 600, "the array job to finish")
    # finished jobs stay in slurmctld's memory for a while: each task's state and exit code
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    logs = "".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("task_*.out")))
    states = re.findall(r"\bJobState=(\S+)", shown)
    codes = re.findall(r"(?<![A-Za-z])ExitCode=(\S+)", shown)
    assert states == ["COMPLETED"] * 2 and codes == ["0:0"] * 2, shown + logs
    print(f"SLURM array job: {time.time() - t0:.1f} s")
    for task, (start, end) in enumerate([(0, N_FRAMES // 2), (N_FRAMES // 2, N_FRAMES)]):
        out = (tmp_path / f"task_{task}.out").read_text()
        assert f"frames {start}..{end - 1} done" in out, out
        assert "Cycles: 1 CPU threads" in out, out  # the CPUs SLURM allotted, not every core
    merged = subprocess.run([sys.executable, "merge_shards.py", f"--label_dir={job}"], cwd=BLENDER_DIR,
                            capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr

    whole = subprocess.run(["bash", "render.sh", f"--n_frames={N_FRAMES}", f"--height={SIZE}", f"--width={SIZE}",
                            f"--poses={poses}", f"--image_dir={one / 'img'}", f"--label_dir={one}"],
                           cwd=BLENDER_DIR, env=render_env(os.environ), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]

    gt, vis, coco, pngs = outputs(job)
    gt1, vis1, coco1, pngs1 = outputs(one)
    assert gt.shape == (N_FRAMES, 38)
    assert np.array_equal(gt, gt1) and np.array_equal(vis, vis1)
    assert coco["images"] == coco1["images"] and coco["annotations"] == coco1["annotations"]
    assert list(pngs) == [shards.image_name(i, N_FRAMES) for i in range(N_FRAMES)] == list(pngs1)
    # Cycles' samples depend on (pixel, sample), not on the thread count: the PNGs are the same bytes
    assert all(pngs[n] == pngs1[n] for n in pngs), [n for n in pngs if pngs[n] != pngs1[n]]
