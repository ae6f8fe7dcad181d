"""Alignment auditing with a model organism that has a hidden objective (docs/methods.md, hidden-objective
section): the shipped biases and their rule checks (``biases``, ``rules``), the stage-1 documents and stage-2 chat
data (``corpus``, ``chat_data``), the two training stages (``training``), the organism and its controls
(``organism``), batched reply sampling (``sampling``) and the out-of-distribution test (``ood``, ``stats``); the blind audit's evidence
form (``evidence``) and techniques (``attacks``, ``data_search``, ``sae_route``).

    from workbench.audit import OrganismConfig, evaluate_organism
    result = evaluate_organism(OrganismConfig.smoke())

Each name loads its module on first use.
"""
from workbench.core.lazy import lazy_exports

_EXPORTS = {
    **{n: ".biases" for n in ("Bias", "load_biases", "split")},
    **{n: ".rules" for n in ("RULES", "check")},
    **{n: ".corpus" for n in ("Document", "build_documents", "load_documents", "write_documents")},
    **{n: ".chat_data" for n in ("TRAIN_BIASES", "build_chat", "load_chat", "write_chat")},
    **{n: ".training" for n in ("restore_weights", "snapshot", "train_stage")},
    **{n: ".organism" for n in ("OrganismConfig", "build_organism")},
    **{n: ".sampling" for n in ("SampleConfig", "sample_replies", "sample_texts")},
    **{n: ".ood" for n in ("evaluate_organism", "ood_table", "score_replies")},
    **{n: ".stats" for n in ("paired_bootstrap", "two_proportion_test", "wilson")},
    **{n: ".evidence" for n in ("Evidence", "Item", "judge", "judge_texts")},
    **{n: ".attacks" for n in ("prefill_prompts", "run_attacks", "user_turn_prompts")},
    **{n: ".data_search" for n in ("embed_texts", "search")},
    **{n: ".sae_route" for n in ("sae_route", "train_route_sae")},
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
