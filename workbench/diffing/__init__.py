"""Model diffing (docs/methods.md §13, §17): paired activations of two models on the same text (``alignment``,
``paired_store``), crosscoders and Dedicated Feature Crosscoders trained by the SAE trainer (``crosscoder``,
``dfc``), Latent Scaling (``latent_scaling``), the analyses of a trained crosscoder (``analyses``), the study's
model pairs and sizes (``experiments``) and the blind audit's evidence (``audit``).

    from workbench.diffing import PairConfig, harvest_pair, train_crosscoders, latent_scaling, relative_norms

Each name loads its module on first use.
"""
from workbench.core.lazy import lazy_exports

_EXPORTS = {
    **{n: ".paired_store" for n in ("PairConfig", "PairedStore", "harvest_pair", "crosscoder_spec")},
    **{n: ".alignment" for n in ("align_offsets", "alignment_stats", "tokenize_with_offsets")},
    **{n: ".crosscoder" for n in ("Crosscoder", "CrosscoderConfig", "CrosscoderSpec", "load_crosscoder")},
    **{n: ".dfc" for n in ("Partition", "check_partition")},
    **{n: ".latent_scaling" for n in ("LatentScaling", "latent_scaling", "closed_form_beta")},
    **{n: ".analyses" for n in ("relative_norms", "norm_histogram", "exclusive_ranking", "latent_kinds",
                                "language_shares", "pair_metrics", "steering_check", "top_rows")},
    **{n: ".experiments" for n in ("DiffSizes", "pair_models", "fine_tune_pair", "cross_architecture_pair",
                                   "train_crosscoders", "summarize")},
    **{n: ".documents" for n in ("PairedDocument", "chat_documents", "wiki_documents")},
    **{n: ".persona_shift" for n in ("persona_shifts", "moved_trait")},
    **{n: ".synthetic" for n in ("PlantedPair", "planted_pair")},
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
