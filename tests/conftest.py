import sys
from pathlib import Path

# Tests import the shared package and the stage scripts the way the scripts import each other.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def blender_benchmark():
    """blender/benchmark.py, loaded by path: VAE/, style_transfer/ and pose_net/ have a benchmark.py too."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("blender_benchmark", REPO / "blender" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
