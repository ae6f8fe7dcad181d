"""Interpretability workbench: sparse autoencoders on open language models, offline, in JupyterLab.

Submodules own one concept each: ``assets`` (embedded model and corpus), ``models`` (TransformerLens
loading), ``corpus`` (text to packed contexts), ``hooks``, ``store`` (activations on disk), ``harvest``.
"""
__version__ = "0.1.0"
