"""Seeded random streams named for their purpose (Kubric's way): stream(seed, "coat", frame).

Each random choice draws from its own stream, keyed by the run's seed, a purpose name and the
item it is for (a frame, a zebra), so adding a draw for one purpose changes no other draw, and a
frame is the same whichever process or shard renders it. numpy only (Blender imports it too).
"""
import zlib

import numpy as np


def purpose_key(purpose):
    """A stable 32-bit number for a purpose name (Python's hash() changes between runs)."""
    return zlib.crc32(purpose.encode())


def stream(seed, purpose, *keys):
    """np.random.Generator for (seed, purpose, *keys); keys are non-negative integers."""
    return np.random.default_rng([int(seed), purpose_key(purpose), *map(int, keys)])
