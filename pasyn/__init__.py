"""Conventions shared by every PASyn-v2 stage: pose angles, the rig, keypoints, files.

numpy-only on purpose: Blender's Python imports this too, and it has numpy but not torch
(drawing.py, for contact sheets, also needs Pillow; Blender never imports it).
Scripts that run from their own stage folder put the repo root on sys.path to import it.
"""
