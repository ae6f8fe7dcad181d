"""Finding features: by text (which fire on this prompt or span), by contrast (set A against set B), and by
explanation text (substring and word match over stored explanations).

Text search runs the model only up to the SAE's hook (``stop_at_layer``), encodes the hook's activations, and ranks
features by their max (or mean) activation over the chosen span; with ``results`` the ranking can use activations
relative to each feature's max over the analysed corpus (``relative=True``), which favours features that are
unusually active here over features that are always large.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from workbench.core.protocols import ModelLike, SAELike, SAESource
from workbench.data.hooks import sae_hook, stop_layer
from workbench.data.token_text import spell_tokens
from workbench.sae.interop import as_sae

__all__ = [
    "ContrastHit",
    "ExplanationHit",
    "FeatureHit",
    "TextSearchResult",
    "contrast_features",
    "features_for_text",
    "hook_activations",
    "search_explanations",
    "tokenize_with_offsets",
]


# ----------------------------------------------------------------------------------------------------------------
# Running the model to the hook
# ----------------------------------------------------------------------------------------------------------------


def hook_activations(model: ModelLike, tokens: Tensor, hook: str) -> Tensor:
    """Activations [batch, seq, d] at ``hook`` for token ids [batch, seq]; the model stops after the hook's block."""
    if hook not in model.hook_dict:
        raise ValueError(f"unknown hook {hook!r} for this model; e.g. 'blocks.{model.cfg.n_layers // 2}.hook_resid_post'")
    grabbed: dict[str, Tensor] = {}

    def grab(act, hook):
        grabbed["x"] = act.detach()
        return act

    device = next(model.parameters()).device
    with torch.inference_mode():
        model.run_with_hooks(tokens.to(device), fwd_hooks=[(hook, grab)], stop_at_layer=stop_layer(model, [hook]),
                             return_type=None)
    return grabbed["x"]


def tokenize_with_offsets(tokenizer, text: str, prepend_bos: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and each token's character span (BOS, when prepended, gets (0, 0))."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if prepend_bos and tokenizer.bos_token_id is not None:
        ids, offs = [int(tokenizer.bos_token_id)] + ids, [(0, 0)] + offs
    return ids, offs


def _encode_text(model: ModelLike, sae: SAELike, text: str, hook: str, prepend_bos: bool
                 ) -> tuple[list[int], list[tuple[int, int]], Tensor]:
    ids, offs = tokenize_with_offsets(model.tokenizer, text, prepend_bos)
    if not ids:
        raise ValueError("the text is empty: nothing to encode")
    x = hook_activations(model, torch.tensor([ids]), hook)[0]
    if x.shape[-1] != sae.cfg.d_in:
        raise ValueError(f"d_model mismatch: the hook {hook!r} gives d_model={x.shape[-1]} but the SAE takes "
                         f"d_in={sae.cfg.d_in}: use the SAE trained on this model and hook")
    with torch.no_grad():
        f = sae.encode(x.to(sae.device)).to(torch.float32).cpu()
    return ids, offs, f


def _span_positions(span, text: str, offs: list[tuple[int, int]], prepend_bos: bool) -> tuple[int, int]:
    n = len(offs)
    first = 1 if prepend_bos and n > 1 else 0
    if span is None:
        return first, n
    if isinstance(span, str):
        at = text.find(span)
        if at < 0 or not span:
            raise ValueError(f"span {span!r} does not occur in the text")
        lo, hi = at, at + len(span)
        pos = [i for i, (s, e) in enumerate(offs) if e > lo and s < hi and i >= first]
        if not pos:
            raise ValueError(f"span {span!r} covers no token")
        return pos[0], pos[-1] + 1
    try:
        start, stop = (int(v) for v in span)
    except (TypeError, ValueError):
        raise ValueError(f"span must be None, a substring of the text or (start, stop) token positions; got {span!r}"
                         ) from None
    if not 0 <= start < stop <= n:
        raise ValueError(f"token span ({start}, {stop}) out of range for {n} tokens (BOS is position 0)")
    return start, stop


# ----------------------------------------------------------------------------------------------------------------
# By text
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureHit:
    """A feature's activity over the searched span."""

    feature: int
    score: float  # what the ranking used
    max_activation: float
    mean_activation: float
    n_active: int  # tokens of the span where it fires
    relative: float | None = None  # max over the span / the feature's max over the analysed corpus


@dataclass
class TextSearchResult:
    """The tokens, the span searched, the ranked features and their per-token activations [n_tokens, n_hits]."""

    text: str
    tokens: list[str]
    token_ids: list[int]
    span: tuple[int, int]
    hits: list[FeatureHit]
    acts: Tensor


def features_for_text(model: ModelLike, sae: SAESource, text: str, *, span: str | tuple[int, int] | None = None,
                      by: str = "max",
                      top_n: int = 20, results=None, relative: bool = False, hook: str | None = None,
                      prepend_bos: bool = True) -> TextSearchResult:
    """The features most active on ``text`` (or on ``span``: a substring, or (start, stop) token positions).

    ``by``: "max" or "mean" activation over the span. ``relative=True`` (needs ``results`` from the analysis pass)
    divides by each feature's corpus max first.
    """
    sae = as_sae(sae, model=model)  # a sae_lens.SAE, a folder...; on the model's device
    if by not in ("max", "mean"):
        raise ValueError(f"by must be 'max' or 'mean', got {by!r}")
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}: an empty text has no tokens of its own "
                         f"(only <bos>), so there are no features to rank")
    if relative and results is None:
        raise ValueError("relative=True needs results= (a FeatureResults with each feature's max activation)")
    if results is not None and results.d_sae != sae.cfg.d_sae:
        raise ValueError(f"results have d_sae={results.d_sae} but the SAE has d_sae={sae.cfg.d_sae}")
    hook = sae_hook(sae, hook)
    ids, offs, f = _encode_text(model, sae, text, hook, prepend_bos)
    lo, hi = _span_positions(span, text, offs, prepend_bos)
    part = f[lo:hi]
    mx, mean = part.max(0).values, part.mean(0)
    n_active = (part > 0).sum(0)
    corpus_max = results.max_activation.to(torch.float32) if results is not None else None
    rel = mx / corpus_max.clamp_min(1e-12) if corpus_max is not None else None
    base = mx if by == "max" else mean
    score = base / corpus_max.clamp_min(1e-12) if relative and corpus_max is not None else base
    score = torch.where(n_active > 0, score, torch.full_like(score, float("-inf")))
    k = min(top_n, int((n_active > 0).sum()))
    top = torch.topk(score, k).indices.tolist() if k else []
    hits = [FeatureHit(feature=i, score=float(score[i]), max_activation=float(mx[i]), mean_activation=float(mean[i]),
                       n_active=int(n_active[i]), relative=float(rel[i]) if rel is not None else None) for i in top]
    tokens = spell_tokens(ids, model.tokenizer, model.tokenizer.batch_decode([[t] for t in ids]))
    return TextSearchResult(text=text, tokens=tokens, token_ids=ids, span=(lo, hi), hits=hits,
                            acts=f[:, top] if top else f[:, :0])


# ----------------------------------------------------------------------------------------------------------------
# By contrast
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ContrastHit:
    """A feature's activity on set A against set B (per token or per text, see ``unit``)."""

    feature: int
    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    score: float  # diff / pooled standard deviation (Cohen's d)
    freq_a: float  # fraction of units where it fires
    freq_b: float


class _Moments:
    def __init__(self, d: int):
        self.n = 0
        self.s = torch.zeros(d, dtype=torch.float64)
        self.ss = torch.zeros(d, dtype=torch.float64)
        self.fire = torch.zeros(d, dtype=torch.int64)

    def add(self, f: Tensor) -> None:
        f64 = f.to(torch.float64)
        self.n += f.shape[0]
        self.s += f64.sum(0)
        self.ss += f64.pow(2).sum(0)
        self.fire += (f > 0).sum(0)

    def mean_var(self) -> tuple[Tensor, Tensor]:
        n = max(self.n, 1)
        mean = self.s / n
        return mean, (self.ss / n - mean.pow(2)).clamp_min(0)


def contrast_features(model: ModelLike, sae: SAESource, texts_a: Sequence[str], texts_b: Sequence[str], *,
                      top_n: int = 20,
                      by: str = "diff", unit: str = "token", hook: str | None = None, prepend_bos: bool = True
                      ) -> list[ContrastHit]:
    """Features more active on ``texts_a`` than on ``texts_b``, ranked by mean difference (``by="diff"``) or by the
    normalised score (``by="score"``, Cohen's d). ``unit``: "token" (every non-BOS token is a sample) or "text" (each
    text's max activation is one sample)."""
    sae = as_sae(sae, model=model)
    if by not in ("diff", "score"):
        raise ValueError(f"by must be 'diff' or 'score', got {by!r}")
    if unit not in ("token", "text"):
        raise ValueError(f"unit must be 'token' or 'text', got {unit!r}")
    if not texts_a or not texts_b:
        raise ValueError("contrast_features needs at least one text in each set")
    hook = sae_hook(sae, hook)
    moments = []
    for texts in (texts_a, texts_b):
        m = _Moments(int(sae.cfg.d_sae))
        for text in texts:
            _, _, f = _encode_text(model, sae, text, hook, prepend_bos)
            f = f[1:] if prepend_bos and f.shape[0] > 1 else f
            m.add(f.max(0, keepdim=True).values if unit == "text" else f)
        moments.append(m)
    (ma, va), (mb, vb) = moments[0].mean_var(), moments[1].mean_var()
    diff = ma - mb
    score = diff / ((va + vb) / 2).sqrt().clamp_min(1e-8)
    score = torch.where(diff == 0, torch.zeros_like(score), score)
    key = diff if by == "diff" else score
    top = torch.topk(key, min(top_n, key.numel())).indices.tolist()
    fa, fb = moments[0].fire.double() / max(moments[0].n, 1), moments[1].fire.double() / max(moments[1].n, 1)
    return [ContrastHit(feature=i, mean_a=float(ma[i]), mean_b=float(mb[i]), diff=float(diff[i]),
                        score=float(score[i]), freq_a=float(fa[i]), freq_b=float(fb[i])) for i in top if diff[i] > 0]


# ----------------------------------------------------------------------------------------------------------------
# By explanation text
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExplanationHit:
    feature: int
    score: float  # 1 + (whole-word bonus) for a substring match, else the fraction of query words found
    text: str


_WORD = re.compile(r"\w+", re.UNICODE)


def _searchable(item) -> str:
    expl = getattr(item, "explanation", item)
    if isinstance(expl, str):
        return expl
    meta = getattr(expl, "meta", {}) or {}
    extra = meta.get("pattern_strings", []) + meta.get("key_tokens", [])
    return " ".join([expl.text, *map(str, extra)])


def search_explanations(explanations, query: str, top_n: int = 20) -> list[ExplanationHit]:
    """Features whose explanation matches ``query``: a case-insensitive substring match ranks first (whole words
    above parts of words), then explanations containing some of the query's words, by the fraction found.

    ``explanations``: an :class:`workbench.analysis.explain.ExplanationSet` or a mapping feature -> text / Explanation.
    """
    q = query.strip().lower()
    if not q:
        raise ValueError("the query is empty")
    items: Mapping = getattr(explanations, "items", explanations)
    if callable(items):  # a plain dict's .items
        items = explanations
    q_words = set(_WORD.findall(q))
    hits = []
    for feature, item in items.items():
        text = _searchable(item)
        low = text.lower()
        if q in low:
            whole = re.search(r"(?<!\w)" + re.escape(q) + r"(?!\w)", low) is not None
            score = 1.0 + (0.5 if whole else 0.0)
        elif q_words:
            words = set(_WORD.findall(low))
            score = len(q_words & words) / len(q_words)
        else:
            score = 0.0
        if score > 0:
            shown = getattr(getattr(item, "explanation", item), "text", text)
            hits.append(ExplanationHit(int(feature), score, shown))
    hits.sort(key=lambda h: (-h.score, h.feature))
    return hits[:top_n]
