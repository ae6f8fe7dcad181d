"""Interpretability workbench: sparse autoencoders on open language models, offline, in JupyterLab.

The sub-packages follow the data, and each imports only from the ones before it:

- ``workbench.core``: cache folders, typed configs, persistence (atomic writes, tagged JSON, safetensors), hardware
  probes, shipped data tables;
- ``workbench.data``: embedded assets, models (TransformerLens), corpora, hooks, the activation store, harvesting;
- ``workbench.sae``: the SAE architectures and their kernels, SAELens-format files, the trainer, evaluation;
- ``workbench.analysis``: the feature pass, logit effects, search, explanations, neurons, neighbourhoods,
  splitting, scaling laws, completeness, multilingual statistics;
- ``workbench.sdm``: Sparse Distributed Memory: circle intersections, optimal radii, attention heads read as SDM, the
  SDMLP continual learner;
- ``workbench.intervene``: hooked generation, steering, attribution;
- ``workbench.persona``: trait files, judges, persona vectors, monitoring, steering with them, fine-tuning checkpoints;
- ``workbench.diffing``: paired activations of two models, crosscoders, DFC, Latent Scaling, the blind audit;
- ``workbench.report``: static HTML (feature cards, the report page), Neuronpedia export;
- ``workbench.studies``: run profiles, the standard SAEs the notebooks share, cached study steps, the demo and the
  whole-corpus job;
- ``widgets`` (a sibling package) holds the JupyterLab views and sits above all of these.

The names a notebook needs are importable from here; each is loaded on first use, so ``import workbench`` stays
instant and pulls in none of torch's heavier neighbours (TransformerLens, umap, plotly)::

    from workbench import load_model, CorpusSpec, HarvestSpec, harvest_cached, RunSpec, TrainConfig, train

The flat module paths of 0.1 (``workbench.features``...) still import, with a DeprecationWarning, until 0.3.
"""
from __future__ import annotations

from workbench import _legacy
from workbench.core.lazy import lazy_exports

__version__ = "0.2.0"

_legacy.install()

# public name -> the module that owns it
_API: dict[str, str] = {
    "cache_dir": "workbench.core.home",
    "load_model": "workbench.data.models",
    "DEFAULT_MODEL": "workbench.data.models",
    "CorpusSpec": "workbench.data.corpus",
    "HarvestSpec": "workbench.data.harvest",
    "harvest": "workbench.data.harvest",
    "harvest_cached": "workbench.data.harvest",
    "ActivationStore": "workbench.data.store",
    "SAE": "workbench.sae.model",
    "SAEConfig": "workbench.sae.model",
    "load_sae": "workbench.sae.io",
    "save_sae": "workbench.sae.io",
    "load_pretrained": "workbench.sae.io",
    "as_sae": "workbench.sae.interop",
    "to_sae_lens": "workbench.sae.lens",
    "RunSpec": "workbench.sae.train",
    "StoreSource": "workbench.sae.train",
    "TrainConfig": "workbench.sae.train",
    "train": "workbench.sae.train",
    "evaluate_activations": "workbench.sae.evaluate",
    "downstream_metrics": "workbench.sae.evaluate",
    "FeatureConfig": "workbench.analysis.features",
    "analysis_tokens": "workbench.analysis.features",
    "score_features": "workbench.analysis.explain",
    "heldout_contexts": "workbench.analysis.explain",
    "ProbeConfig": "workbench.analysis.concept_probing",
    "concept_probing": "workbench.analysis.concept_probing",
    "training_dir": "workbench.sae.train",
    "FeatureResults": "workbench.analysis.features",
    "compute_features": "workbench.analysis.features",
    "explain_features": "workbench.analysis.explain",
    "ExplanationSet": "workbench.analysis.explain",
    "write_report": "workbench.report.page",
    "current_profile": "workbench.studies.profile",
    "standard_sae": "workbench.studies.profile",
    "nested_saes": "workbench.studies.profile",
    "runs_base": "workbench.studies.profile",
    "standard_harvest_spec": "workbench.studies.profile",
    "standard_training": "workbench.studies.profile",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_exports(__name__, _API)
