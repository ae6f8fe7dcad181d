"""Export an SAE's features in the JSON that SAEDashboard writes and Neuronpedia uploads ("batch" files), plus its
explanations in Neuronpedia's explanation export shape, so a workbench SAE opens in the tools people already use.

    from workbench.report.export import export_neuronpedia
    export_neuronpedia("runs/np", results, explanations, model_id="gemma-3-270m", sae_set="workbench-topk-16k")

Writes ``out/batch-<n>.json`` (``features_per_batch`` features each: top logits, activation-density histogram, top
and per-bucket activation examples with per-token activations), ``out/explanations.json`` (one record per explained
feature) and ``out/manifest.json``. A batch file loads with SAEDashboard's reader::

    from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch
    batch = NeuronpediaDashboardBatch(**json.load(open("runs/np/batch-0.json")))

Field meanings follow SAEDashboard's ``NeuronpediaDashboardFeature``: ``pos_str``/``pos_values`` the tokens the
feature's decoder direction promotes most through the unembedding (``neg_*`` suppresses), ``frac_nonzero`` its
firing density, ``freq_hist_data_bar_values``/``heights`` the histogram of its non-zero activations, each
activation record a context window (``tokens``, ``values``, ``qualifying_token_index`` the example token) with the
activation interval it was sampled from (``bin_min``/``bin_max``; the top examples use ``bin_min=-1`` as
SAEDashboard's top-activation group does) and ``bin_contains`` the fraction of the feature's firings in that
interval. Neuron alignment and feature correlations are not computed here and are left empty.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from workbench.analysis.bundle import unpack
from workbench.core.persist import atomic_write_text

__all__ = ["EXPLANATION_TYPES", "export_neuronpedia", "explanation_type", "feature_json", "hook_layer_index"]


def hook_layer_index(hook: str) -> int:
    """The block index of a TransformerLens hook name (``blocks.9.hook_resid_post`` -> 9; 0 when it has none)."""
    m = re.match(r"blocks\.(\d+)\.", hook or "")
    return int(m.group(1)) if m else 0


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def _activation(ex, bin_min: float, bin_max: float, bin_contains: float) -> dict[str, Any]:
    return {"bin_min": _r(bin_min), "bin_max": _r(bin_max), "bin_contains": _r(bin_contains, 6),
            "tokens": list(ex.tokens), "values": [_r(a, 3) for a in ex.acts], "qualifying_token_index": int(ex.index)}


def feature_json(results, index: int, *, n_top: int = 20, dataset: str = "") -> dict[str, Any]:
    """One feature of a :class:`~workbench.analysis.features.FeatureResults` as SAEDashboard's feature record."""
    r = results.feature(index)
    acts = [_activation(ex, -1.0, r.max_activation, -1.0) for ex in r.top[:n_top]]
    total = max(int(r.count), 1)
    for b in r.buckets:
        acts += [_activation(ex, b.lo, b.hi, b.count / total) for ex in b.examples]
    h = r.histogram
    centres = [(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:])]
    lg = r.logits
    return {
        "feature_index": int(r.index),
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": [], "correlated_features_l1": [], "correlated_features_pearson": [],
        "neg_str": list(lg.bottom_tokens) if lg else [], "neg_values": [_r(v) for v in lg.bottom_values] if lg else [],
        "pos_str": list(lg.top_tokens) if lg else [], "pos_values": [_r(v) for v in lg.top_values] if lg else [],
        "frac_nonzero": float(r.density),
        "freq_hist_data_bar_values": [_r(c) for c in centres],
        "freq_hist_data_bar_heights": [float(c) for c in h.counts],
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "n_prompts_total": int(results.meta.get("n_contexts", 0)),
        "n_tokens_in_prompt": int(results.meta.get("context_size", 0)),
        "dataset": dataset,
        "activations": acts,
        "decoder_weights_dist": [],
        "vector": [],
    }


# Neuronpedia's ``typeName`` says how an explanation was made. Ours are neither OpenAI's token-activation-pair
# method nor any other Neuronpedia type, so they carry types of their own, by the Explanation's ``source``:
EXPLANATION_TYPES = {
    "tokens": "workbench_token-ngrams",  # TokenExplainer: offline, the n-grams that best separate firing positions
    "llm": "workbench_llm-key-tokens",  # OpenAIExplainer: an LLM's text from top examples, predicted by key tokens
}


def explanation_type(unit) -> str:
    """The ``typeName`` of one explanation (an ExplainedUnit, an Explanation or plain text: the offline type)."""
    source = str(getattr(getattr(unit, "explanation", unit), "source", "tokens") or "tokens")
    return EXPLANATION_TYPES.get(source.split(":", 1)[0], f"workbench_{source.split(':', 1)[0]}")


def _explainer_name(unit, default: str) -> str:
    source = str(getattr(getattr(unit, "explanation", unit), "source", "") or "")
    return source.split(":", 1)[1] if ":" in source else default


def _explanation_text(unit) -> str:
    expl = getattr(unit, "explanation", unit)
    return str(getattr(expl, "text", expl))


def export_neuronpedia(out_dir: str | Path, results, explanations=None, *, model_id: str | None = None,
                       sae_set: str = "workbench", sae_id_suffix: str | None = None,
                       features: Iterable[int] | None = None, features_per_batch: int = 128, n_top: int = 20,
                       dataset: str = "", explainer_name: str = "workbench-token-explainer") -> Path:
    """Write the features (default: every alive one) and their explanations to ``out_dir`` (see the module
    docstring); returns ``out_dir``. ``explanations``: an ExplanationSet or a mapping feature -> text/unit.
    ``results`` may be an :class:`~workbench.analysis.bundle.AnalysisBundle`; its explanations are used unless
    ``explanations`` is given."""
    pieces = unpack(results, explanations=explanations)
    results = pieces["results"]
    explanations = explanations if explanations is not None else pieces["explanations"]
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be a positive integer, got {features_per_batch}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = results.alive().tolist() if features is None else [results.check_index(i) for i in features]
    hook = str(results.meta.get("hook", ""))
    model_id = model_id or str(results.meta.get("model_name") or "")
    layer = hook_layer_index(hook)
    batches = []
    for b, s in enumerate(range(0, len(feats), features_per_batch)):
        batch = {"model_id": model_id, "layer": layer, "sae_set": sae_set, "sae_id_suffix": sae_id_suffix,
                 "features": [feature_json(results, i, n_top=n_top, dataset=dataset)
                              for i in feats[s:s + features_per_batch]]}
        name = f"batch-{b}.json"
        atomic_write_text(out / name, json.dumps(batch))
        batches.append(name)
    records = []
    if explanations is not None:
        source = f"{layer}-{sae_set}" + (f"-{sae_id_suffix}" if sae_id_suffix else "")
        for i in feats:
            if i in explanations:
                unit = explanations[i]
                score = getattr(unit, "score", None)
                records.append({"modelId": model_id, "layer": source, "index": str(i),
                                "description": _explanation_text(unit),
                                "explanationModelName": _explainer_name(unit, explainer_name),
                                "typeName": explanation_type(unit),
                                **({"scores": [{"method": "heldout_f1", "value": float(score.f1)}]} if score else {})})
    atomic_write_text(out / "explanations.json", json.dumps(records, ensure_ascii=False))
    manifest = {"format": "neuronpedia-batches", "model_id": model_id, "hook": hook, "layer": layer,
                "sae_set": sae_set, "sae_id_suffix": sae_id_suffix, "n_features": len(feats), "batches": batches,
                "explanations": "explanations.json", "n_explanations": len(records)}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return out
