import importlib.util
import sys
from pathlib import Path

# Tests import the shared package and the stage scripts the way the scripts import each other.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_script(relative):
    """A script of the repo (e.g. "pose_net/train.py") as a module named after its folder and file:
    every stage has a train.py or benchmark.py, so plain imports would collide. Its own folder is on
    sys.path while it loads, as when it runs."""
    path = REPO / relative
    folder = str(path.parent)
    sys.path.insert(0, folder)  # the scripts import their stage's helpers by name
    try:
        spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def blender_benchmark():
    return load_script("blender/benchmark.py")
