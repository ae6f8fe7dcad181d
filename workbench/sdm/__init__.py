"""Sparse Distributed Memory: the binary memory and its optimal radii, attention read as SDM, and the SDM-MLP
continual learner (docs/methods.md, SDM section)."""
