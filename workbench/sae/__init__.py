"""Sparse autoencoders: the architectures (``model``) and their training kernels (``kernels``), SAELens-format
files (``io``), the trainer (``train``, command line in ``cli``) and evaluation (``evaluate``).

``from workbench.sae import SAE, SAEConfig`` keeps working as it did when this was one module.
"""
from workbench.sae.model import ARCHITECTURES, SAE, SAEConfig, SAEMetadata

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SAEMetadata"]
