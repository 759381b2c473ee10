import sys
from pathlib import Path

# Tests import the shared package and the stage scripts the way the scripts import each other.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
