"""Features as computational intermediates: attribution of every (position, feature) to a logit difference, checked
against ablation (docs/methods.md §9).

The SAE is spliced in at its residual-stream hook with the error term kept: at every position after BOS the
residual becomes ``decode(f) + err`` with ``f = encode(x)`` and ``err = x - decode(f)`` held fixed, so the model's
output is unchanged (up to float rounding) while the metric depends on ``f``:

- **attribution** ``attr[p, i] = f_i(p) * (W_dec[i] . dm/dresid(p))``: ``f * d m / d f`` from one backward pass, the
  first-order estimate of what removing the feature would do to the metric ``m``;
- **ablation**: set ``f_i(p) = 0`` (error term kept), rerun, and record ``effect = m_clean - m_ablated``. Many
  ablations run as one batch: row ``b`` of the batch subtracts ``f_i(p) W_dec[i]`` at position ``p``; the model
  resumes from the hook (``start_at_layer``) and only the metric's logits are unembedded;
- :func:`compare_with_ablation`: Spearman rank correlation of attribution with the ablation effect over all active
  (position, feature) pairs, and how many of the top-10 agree, for attribution and, as the baseline, for the raw
  activation ``f_i(p)`` (the paper: ~0.8 against ~0.1).

:func:`hop_chain` checks each hop of a multi-step fact on its own ("Dallas is in Texas", "the capital of Texas is
Austin") next to the composed prompt, to show where a chain breaks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike, SAELike
from workbench.data.hooks import hook_layer, sae_hook
from workbench.data.token_text import spell_tokens
from workbench.core.hardware import torch_threads

__all__ = [
    "AblationOutcome",
    "AblationResult",
    "Agreement",
    "Attribution",
    "AttributionCheck",
    "AttributionHit",
    "HopResult",
    "LogitDiff",
    "ablate_one",
    "ablation_effects",
    "attribute",
    "attribution_vs_ablation",
    "compare_with_ablation",
    "feature_trace",
    "hop_chain",
]


# ----------------------------------------------------------------------------------------------------------------
# Metric and model plumbing
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogitDiff:
    """``logit(target) - logit(baseline)`` at the last position (``logit(target)`` without a baseline).

    Tokens are strings of one token each, with their leading space: ``LogitDiff(" Texas", " California")``.
    """

    target: str
    baseline: str | None = None

    def token_ids(self, tokenizer) -> tuple[int, int | None]:
        t = _single_token(tokenizer, self.target)
        return t, (_single_token(tokenizer, self.baseline) if self.baseline is not None else None)

    def describe(self) -> str:
        return f"logit({self.target!r})" + (f" - logit({self.baseline!r})" if self.baseline is not None else "")


def _single_token(tokenizer, text: str) -> int:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(f"{text!r} is {len(ids)} tokens {pieces}: the metric needs single tokens (mind the leading "
                         f"space, e.g. ' Texas')")
    return int(ids[0])


def _resume_layer(model: ModelLike, hook: str) -> int:
    """The block the forward resumes at when the residual at ``hook`` is replaced."""
    layer = hook_layer(hook)
    if hook not in model.hook_dict or layer is None:
        raise ValueError(f"unknown or non-block hook {hook!r}: attribution splices the SAE into the residual stream "
                         f"at 'blocks.<layer>.hook_resid_post' or 'blocks.<layer>.hook_resid_pre'")
    if hook.endswith("hook_resid_post"):
        return layer + 1
    if hook.endswith("hook_resid_pre"):
        return layer
    raise ValueError(f"attribution needs a residual-stream SAE (hook_resid_post / hook_resid_pre), got {hook!r}")


def _unembed(model: ModelLike, resid_last: Tensor, ids: Sequence[int] | None = None) -> Tensor:
    """Logits [batch, n] of the final-position residual [batch, d] (before the final norm); only ``ids`` if given."""
    normed = model.ln_final(resid_last[:, None, :])[:, 0] if model.cfg.normalization_type is not None else resid_last
    W_U, b_U = model.W_U, model.b_U
    if ids is not None:
        idx = torch.as_tensor(list(ids), device=W_U.device)
        W_U, b_U = W_U[:, idx], b_U[idx]
    logits = normed @ W_U + b_U
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


def _resume(model: ModelLike, resid: Tensor, start: int) -> Tensor:
    """Run blocks ``start..`` on ``resid`` [batch, pos, d]; the last position's residual before the final norm."""
    out = model(resid, start_at_layer=start, stop_at_layer=model.cfg.n_layers)
    return out[:, -1]


def _metric(logits: Tensor, ids: tuple[int, int | None]) -> Tensor:
    return logits[..., 0] - logits[..., 1] if ids[1] is not None else logits[..., 0]


def _metric_ids(ids: tuple[int, int | None]) -> list[int]:
    return [ids[0]] if ids[1] is None else [ids[0], ids[1]]


def _top_predictions(tokenizer, logits: Tensor, n: int) -> list[tuple[str, float]]:
    probs = logits.float().softmax(-1)
    top = probs.topk(n)
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


# ----------------------------------------------------------------------------------------------------------------
# Attribution
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AttributionHit:
    position: int
    token: str
    feature: int
    activation: float
    attribution: float


@dataclass
class Attribution:
    """Attribution of every (position, feature) of one prompt to ``metric``.

    ``acts``, ``grads``, ``attr`` [n_tokens, d_sae]: activations, ``W_dec . dm/dresid`` and their product (rows
    before ``first`` — the BOS — are zero: the SAE is not spliced there). ``error_attr`` [n_tokens]: the same
    first-order attribution for the SAE's error term. ``resid`` [n_tokens, d_model]: the spliced residual at the
    hook. ``logits``: the last position's logits of the spliced run (equal to the clean ones).
    """

    prompt: str
    tokens: list[str]
    token_ids: list[int]
    hook: str
    metric: LogitDiff
    metric_ids: tuple[int, int | None]
    metric_value: float
    acts: Tensor
    grads: Tensor
    attr: Tensor
    error_attr: Tensor
    resid: Tensor
    logits: Tensor
    first: int
    top_predictions: list[tuple[str, float]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def d_sae(self) -> int:
        return int(self.acts.shape[1])

    def active_pairs(self) -> Tensor:
        """[n, 2] (position, feature) of every active feature after BOS, in position then feature order."""
        return (self.acts > 0).nonzero()

    def check(self, position: int, feature: int) -> tuple[int, int]:
        """Validate a (position, feature) pair; ValueError names the valid ranges."""
        p, i = int(position), int(feature)
        if not self.first <= p < self.n_tokens:
            raise ValueError(f"position {p} out of range: the prompt has tokens {self.first}..{self.n_tokens - 1} "
                             f"after BOS")
        if not 0 <= i < self.d_sae:
            raise ValueError(f"unknown feature {i}: the SAE has features 0..{self.d_sae - 1}")
        return p, i

    def position_of(self, token: str, occurrence: int = -1) -> int:
        """The position of ``token`` (exact token string, e.g. ' Dallas'); the last occurrence by default."""
        hits = [j for j, t in enumerate(self.tokens) if t == token and j >= self.first]
        if not hits:
            raise ValueError(f"token {token!r} is not in the prompt; its tokens are {self.tokens}")
        return hits[occurrence]

    def top(self, n: int = 10, by: str = "abs", position: int | None = None) -> list[AttributionHit]:
        """The ``n`` strongest (position, feature) pairs: by |attribution| ("abs"), attribution ("positive"),
        -attribution ("negative") or activation ("activation"); only at ``position`` if given."""
        keys = {"abs": self.attr.abs(), "positive": self.attr, "negative": -self.attr, "activation": self.acts}
        if by not in keys:
            raise ValueError(f"by must be one of {', '.join(keys)}, got {by!r}")
        score = keys[by].clone()
        score[self.acts <= 0] = float("-inf")
        if position is not None:
            p, _ = self.check(position, 0)
            mask = torch.ones_like(score, dtype=torch.bool)
            mask[p] = False
            score[mask] = float("-inf")
        flat = score.flatten()
        k = min(int(n), int(torch.isfinite(flat).sum()))
        idx = flat.topk(k).indices if k else flat[:0].long()
        out = []
        for j in idx.tolist():
            p, i = divmod(j, self.d_sae)
            out.append(AttributionHit(p, self.tokens[p], i, float(self.acts[p, i]), float(self.attr[p, i])))
        return out


def attribute(model: ModelLike, sae: SAELike, prompt: str, metric: LogitDiff, *, hook: str | None = None,
              prepend_bos: bool = True,
              n_predictions: int = 10, threads: int | None = None) -> Attribution:
    """Attribution of every active (position, feature) of ``prompt`` to ``metric`` with ``sae`` spliced in at its
    hook and the error term kept (see the module docstring). ``threads``: torch CPU threads for the pass (None:
    unchanged; 1 is several times faster on a CPU shared with other work)."""
    with torch_threads(threads):
        return _attribute(model, sae, prompt, metric, hook, prepend_bos, n_predictions)


def _attribute(model: ModelLike, sae: SAELike, prompt: str, metric: LogitDiff, hook: str | None, prepend_bos: bool,
               n_predictions: int) -> Attribution:
    if not isinstance(metric, LogitDiff):
        raise ValueError(f"metric must be a LogitDiff, got {type(metric).__name__}")
    hook = sae_hook(sae, hook)
    start = _resume_layer(model, hook)
    d_model = int(model.cfg.d_model)
    if int(sae.cfg.d_in) != d_model:
        raise ValueError(f"d_model mismatch: the SAE takes d_in={sae.cfg.d_in} but the model's d_model is {d_model}: "
                         f"use an SAE trained on this model's {hook!r}")
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty")
    tok = model.tokenizer
    ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
    first = 0
    if prepend_bos and tok.bos_token_id is not None:
        ids, first = [int(tok.bos_token_id)] + ids, 1
    if len(ids) <= first:
        raise ValueError("the prompt tokenises to nothing")
    metric_ids = metric.token_ids(tok)
    device = next(model.parameters()).device
    tokens = torch.tensor([ids], device=device)
    with torch.no_grad():
        x = model(tokens, stop_at_layer=start)[0]
    xs = x[first:].to(sae.device, sae.dtype)
    with torch.no_grad():
        f0 = sae.encode(xs)
    f = f0.clone().requires_grad_(True)
    with torch.enable_grad():
        recon = sae.decode(f)
        err = (xs - recon).detach().requires_grad_(True)
        spliced = torch.cat([x[:first].to(recon.dtype), recon + err]).to(x.dtype)
        last = _resume(model, spliced[None], start)
        logits = _unembed(model, last)[0]
        m = _metric(logits[_metric_ids(metric_ids)], metric_ids)
        g_f, g_err = torch.autograd.grad(m, [f, err])
    n, d_sae = len(ids), int(sae.cfg.d_sae)
    acts = torch.zeros(n, d_sae)
    grads = torch.zeros(n, d_sae)
    acts[first:] = f0.detach().float().cpu()
    grads[first:] = g_f.detach().float().cpu()
    error_attr = torch.zeros(n)
    error_attr[first:] = (err.detach() * g_err).sum(-1).float().cpu()
    logits = logits.detach().float().cpu()
    return Attribution(prompt=prompt, tokens=spell_tokens(ids, tok, tok.batch_decode([[i] for i in ids])),
                       token_ids=ids, hook=hook,
                       metric=metric, metric_ids=metric_ids, metric_value=float(m.detach()), acts=acts, grads=grads,
                       attr=acts * grads, error_attr=error_attr, resid=spliced.detach().float().cpu(), logits=logits,
                       first=first, top_predictions=_top_predictions(tok, logits, n_predictions))


# ----------------------------------------------------------------------------------------------------------------
# Ablation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AblationResult:
    """``effect[j] = metric_clean - metric_ablated[j]`` for zeroing ``pairs[j]`` = (position, feature)."""

    pairs: Tensor
    metric_clean: float
    metric_ablated: Tensor
    effect: Tensor
    activation: Tensor  # f_i(p) of each pair
    attribution: Tensor  # attr[p, i] of each pair


def _pairs(attribution: Attribution, pairs) -> Tensor:
    if pairs is None:
        out = attribution.active_pairs()
    else:
        out = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
        for p, i in out.tolist():
            attribution.check(p, i)
    return out


@torch.no_grad()
def _ablated_rows(model: ModelLike, sae: SAELike, attribution: Attribution, pairs: Tensor, start: int,
                  ids: list[int] | None):
    """Logits (of ``ids``, or all) at the last position for a clean row followed by one row per pair."""
    base = attribution.resid.to(next(model.parameters()).device)
    W = sae.W_dec.detach().to(base.device, base.dtype)
    B = len(pairs) + 1
    X = base.expand(B, *base.shape).clone()
    if len(pairs):
        pos, feat = pairs[:, 0].to(base.device), pairs[:, 1].to(base.device)
        a = attribution.acts[pairs[:, 0], pairs[:, 1]].to(base.device, base.dtype)
        X[torch.arange(1, B, device=base.device), pos] -= a[:, None] * W[feat]
    return _unembed(model, _resume(model, X, start), ids).float().cpu()


def ablation_effects(model: ModelLike, sae: SAELike, attribution: Attribution, pairs=None, *, batch_size: int = 32,
                     progress: bool = False, threads: int | None = None) -> AblationResult:
    """Zero each (position, feature) of ``pairs`` (default: every active pair) on its own, error term kept, and
    record the change of the metric. ``batch_size`` ablations share a forward pass (plus one clean row, so each
    effect is measured against a clean run of the same batch). ``threads`` as in :func:`attribute`."""
    with torch_threads(threads):
        return _ablation_effects(model, sae, attribution, pairs, batch_size, progress)


def _ablation_effects(model: ModelLike, sae: SAELike, attribution: Attribution, pairs, batch_size: int, progress: bool
                      ) -> AblationResult:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if int(sae.cfg.d_sae) != attribution.d_sae:
        raise ValueError(f"the attribution has d_sae={attribution.d_sae} but the SAE has {sae.cfg.d_sae}: use the "
                         f"SAE it was computed with")
    pairs = _pairs(attribution, pairs)
    start = _resume_layer(model, attribution.hook)
    ids = _metric_ids(attribution.metric_ids)
    effects, ablated, clean_values = [], [], []
    chunks = [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)] or [pairs]
    for chunk in tqdm(chunks, desc="ablations", disable=not progress):
        m = _metric(_ablated_rows(model, sae, attribution, chunk, start, ids), attribution.metric_ids)
        clean_values.append(float(m[0]))
        ablated.append(m[1:])
        effects.append(m[0] - m[1:])
    p, i = pairs[:, 0], pairs[:, 1]
    return AblationResult(pairs=pairs, metric_clean=clean_values[0], metric_ablated=torch.cat(ablated),
                          effect=torch.cat(effects), activation=attribution.acts[p, i].clone(),
                          attribution=attribution.attr[p, i].clone())


@dataclass
class AblationOutcome:
    """One ablation and what it did to the next-token prediction."""

    position: int
    token: str
    feature: int
    activation: float
    attribution: float
    metric_before: float
    metric_after: float
    top_before: list[tuple[str, float]]
    top_after: list[tuple[str, float]]

    @property
    def effect(self) -> float:
        return self.metric_before - self.metric_after


def ablate_one(model: ModelLike, sae: SAELike, attribution: Attribution, position: int, feature: int, *,
               n_predictions: int = 10
               ) -> AblationOutcome:
    """Zero feature ``feature`` at ``position`` (error term kept) and return the metric and top predictions before
    and after. Raises ValueError when the feature is not active there (nothing to ablate)."""
    p, i = attribution.check(position, feature)
    a = float(attribution.acts[p, i])
    if a <= 0:
        active = (attribution.acts[p] > 0).nonzero().flatten().tolist()
        raise ValueError(f"feature {i} is not active at position {p} ({attribution.tokens[p]!r}): nothing to ablate; "
                         f"active there: {active[:20]}")
    start = _resume_layer(model, attribution.hook)
    logits = _ablated_rows(model, sae, attribution, torch.tensor([[p, i]]), start, None)
    before, after = (_metric(row[_metric_ids(attribution.metric_ids)], attribution.metric_ids) for row in logits)
    tok = model.tokenizer
    return AblationOutcome(position=p, token=attribution.tokens[p], feature=i, activation=a,
                           attribution=float(attribution.attr[p, i]), metric_before=float(before),
                           metric_after=float(after), top_before=_top_predictions(tok, logits[0], n_predictions),
                           top_after=_top_predictions(tok, logits[1], n_predictions))


# ----------------------------------------------------------------------------------------------------------------
# Agreement
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Agreement:
    """How well attribution (and, as the baseline, raw activation) predicts the ablation effect.

    ``spearman_*``: rank correlation with the signed effect over ``n_pairs`` active (position, feature) pairs.
    ``top_*``: how many of the ``top`` pairs by |effect| are also among the ``top`` by |attribution| (by activation
    for the baseline).
    """

    n_pairs: int
    top: int
    spearman_attribution: float
    spearman_activation: float
    top_attribution: int
    top_activation: int
    pearson_attribution: float

    def to_dict(self) -> dict:
        return asdict(self)


def _topset(values: Tensor, n: int) -> set[int]:
    return set(values.topk(min(n, values.numel())).indices.tolist())


def compare_with_ablation(ablation: AblationResult, top: int = 10) -> Agreement:
    """Rank agreement of attribution and of raw activation with the measured ablation effects."""
    from scipy.stats import pearsonr, spearmanr

    n = int(ablation.effect.numel())
    if n < 3:
        raise ValueError(f"only {n} ablated pairs: need at least 3 to rank (is any feature active?)")
    e, a, act = (t.double().numpy() for t in (ablation.effect, ablation.attribution, ablation.activation))

    def rho(x, y) -> float:
        return float(spearmanr(x, y).statistic) if x.std() > 0 and y.std() > 0 else float("nan")

    truth = _topset(ablation.effect.abs(), top)
    return Agreement(n_pairs=n, top=top, spearman_attribution=rho(a, e), spearman_activation=rho(act, e),
                     top_attribution=len(truth & _topset(ablation.attribution.abs(), top)),
                     top_activation=len(truth & _topset(ablation.activation, top)),
                     pearson_attribution=float(pearsonr(a, e).statistic) if a.std() > 0 and e.std() > 0
                     else float("nan"))


@dataclass
class AttributionCheck:
    """One prompt's attribution, the ablation of every active pair, and their agreement."""

    attribution: Attribution
    ablation: AblationResult
    agreement: Agreement

    def row(self) -> dict:
        """A flat summary (for a table)."""
        a = self.attribution
        return {"prompt": a.prompt, "metric": a.metric.describe(), "metric value": a.metric_value,
                "top prediction": a.top_predictions[0][0] if a.top_predictions else "",
                **self.agreement.to_dict()}


def attribution_vs_ablation(model: ModelLike, sae: SAELike, prompt: str, metric: LogitDiff, *, batch_size: int = 32,
                            top: int = 10,
                            progress: bool = False, threads: int | None = None) -> AttributionCheck:
    """:func:`attribute`, then :func:`ablation_effects` over every active pair, then :func:`compare_with_ablation`."""
    attr = attribute(model, sae, prompt, metric, threads=threads)
    ablation = ablation_effects(model, sae, attr, batch_size=batch_size, progress=progress, threads=threads)
    return AttributionCheck(attr, ablation, compare_with_ablation(ablation, top))


def feature_trace(attributions: dict[str, Attribution], features: Sequence[int], token: str) -> list[dict]:
    """For each labelled attribution and each feature: its activation and attribution at ``token`` (the last
    occurrence) and its attribution summed over all positions: does an intermediate found on one prompt show up,
    and matter, on another?"""
    rows = []
    for label, attr in attributions.items():
        p = attr.position_of(token)
        for f in features:
            _, i = attr.check(p, f)
            rows.append({"prompt": label, "metric": attr.metric.describe(), "feature": i,
                         f"activation at {token!r}": float(attr.acts[p, i]),
                         f"attribution at {token!r}": float(attr.attr[p, i]),
                         "total attribution": float(attr.attr[:, i].sum())})
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Multi-hop chains
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class HopResult:
    """The model's next-token prediction on one prompt: the answer's probability and rank (0 = top)."""

    prompt: str
    answer: str
    probability: float
    rank: int
    top: list[tuple[str, float]]


@torch.no_grad()
def hop_chain(model: ModelLike, hops: Sequence[tuple[str, str]], *, top_n: int = 5, prepend_bos: bool = True,
              threads: int | None = None) -> list[HopResult]:
    """For each (prompt, answer) — e.g. the single hops of a two-hop fact, then the composed prompt — the answer's
    probability and rank at the next token. ``answer`` must be one token (with its leading space)."""
    if not hops:
        raise ValueError("no hops: give (prompt, answer) pairs")
    with torch_threads(threads):
        return [_hop(model, prompt, answer, top_n, prepend_bos) for prompt, answer in hops]


def _hop(model: ModelLike, prompt: str, answer: str, top_n: int, prepend_bos: bool) -> HopResult:
    tok = model.tokenizer
    a = _single_token(tok, answer)
    tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)
    last = model(tokens, stop_at_layer=model.cfg.n_layers)[:, -1]  # only the last position is unembedded
    logits = _unembed(model, last)[0].float()
    probs = logits.softmax(-1)
    rank = int((logits > logits[a]).sum())
    return HopResult(prompt, answer, float(probs[a]), rank, _top_predictions(tok, logits, top_n))

