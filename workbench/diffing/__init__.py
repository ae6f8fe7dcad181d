"""Model diffing (docs/methods.md §13, §17): paired activations of two models on the same text (``alignment``,
``paired_store``), crosscoders and Dedicated Feature Crosscoders trained by the SAE trainer (``crosscoder``,
``dfc``), Latent Scaling (``latent_scaling``) and the analyses of a trained crosscoder (``analyses``)."""
from workbench.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {})
