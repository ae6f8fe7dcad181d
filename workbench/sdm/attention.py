"""Attention read as an SDM: the effective beta of every head, against SDM's optimal band, and how well each head's
attention weights are matched by SDM circle-intersection weights.

A head's softmax input is ``s * |q| |k| cos(q, k)`` (``s`` the model's score scale, queries and keys after RoPE,
which keeps their norms). With ``|q| |k|`` roughly fixed this is ``softmax(beta cos)``, the form SDM's read takes
with ``beta = beta_hamming * n / 2`` (:class:`~workbench.sdm.binary.ExpFit`). Per head:

- ``beta_norm``: ``s * mean|q| * mean|k|`` over the text (Gemma 3's QK-norm makes the norms nearly constant, so this
  is its actual temperature); ``beta_weights`` (QK-norm models only): ``s * |g_q| |g_k|``, the norm scales' gains
  alone, what a unit-RMS input gives; ``beta_max``: the mean over queries of the largest softmax input, the proxy
  Bricken & Pehlevan use for models without QK-norm.
- ``fit_r`` / ``shuffled_r``: Pearson correlation, over all causal (query, key) pairs, between the head's attention
  weights and SDM read weights at the radius whose fitted beta equals the head's beta, computed from the same
  cosines, and the same with the SDM weights permuted among each query's keys (the control).
- what the head does: attention mass on BOS, on the previous token, on itself, and the mean entropy.

    cfg = AttentionSDMConfig(model="gemma-3-270m")
    table = attention_sdm(cfg)          # cached JSON under WORKBENCH_HOME/sdm, keyed by the settings
    table.heads[0]                       # HeadSDM(layer, head, beta_norm, ..., role)
    table.in_band_fraction("beta_norm")
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.core.home import cache_dir
from workbench.core.persist import atomic_write_text
from workbench.sdm.binary import fit_exponential, read_weights
from workbench.sdm.optimal import beta_band

__all__ = ["AttentionSDMConfig", "AttentionSDMTable", "HeadSDM", "attention_sdm", "head_weights",
           "radius_for_beta"]

FORMAT_VERSION = 2


@dataclass(frozen=True)
class AttentionSDMConfig:
    model: str = "gemma-3-270m"
    articles: int = 24  # held-out English wiki articles
    max_tokens: int = 96
    skip_queries: int = 4  # the first queries have too few keys to compare distributions
    progress: bool = True

    @classmethod
    def smoke(cls, model: str = "gemma-3-270m") -> "AttentionSDMConfig":
        return cls(model=model, articles=3, max_tokens=32)

    def key(self) -> str:
        d = asdict(self)
        d.pop("progress")
        return hashlib.sha256(json.dumps({**d, "v": FORMAT_VERSION}, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class HeadSDM:
    layer: int
    head: int
    beta_norm: float
    beta_max: float
    beta_weights: float | None
    radius: int
    fit_r: float  # nan when no query had a key inside the two balls (coverage 0)
    shuffled_r: float
    coverage: float  # share of queries with at least one key within 2 * radius (a non-empty SDM read)
    bos: float
    prev: float
    self_: float
    entropy: float

    @property
    def role(self) -> str:
        for name, mass in (("BOS sink", self.bos), ("previous token", self.prev), ("self", self.self_)):
            if mass > 0.5:
                return name
        return "mixed"


@dataclass
class AttentionSDMTable:
    model: str
    d_head: int
    band: tuple[float, float]
    heads: list[HeadSDM] = field(default_factory=list)

    def betas(self, which: str = "beta_norm") -> np.ndarray:
        return np.array([getattr(h, which) for h in self.heads], dtype=np.float64)

    def in_band(self, which: str = "beta_norm") -> np.ndarray:
        b = self.betas(which)
        return (b >= self.band[0]) & (b <= self.band[1])

    def in_band_fraction(self, which: str = "beta_norm") -> float:
        return float(self.in_band(which).mean())

    def summary(self) -> dict:
        fit = np.array([h.fit_r for h in self.heads])
        shuf = np.array([h.shuffled_r for h in self.heads])
        ok = np.isfinite(fit) & np.isfinite(shuf)
        roles: dict[str, int] = {}
        for h, inside in zip(self.heads, self.in_band()):
            if not inside:
                roles[h.role] = roles.get(h.role, 0) + 1
        out = {"model": self.model, "d_head": self.d_head, "band": [round(x, 2) for x in self.band],
               "heads": len(self.heads),
               "in_band_norm": self.in_band_fraction("beta_norm"), "in_band_max": self.in_band_fraction("beta_max"),
               "beta_norm_median": float(np.median(self.betas("beta_norm"))),
               "beta_max_median": float(np.median(self.betas("beta_max"))),
               "heads_with_sdm_read": int(ok.sum()),
               "coverage_mean": float(np.mean([h.coverage for h in self.heads])),
               "fit_r_mean": float(fit[ok].mean()) if ok.any() else float("nan"),
               "shuffled_r_mean": float(shuf[ok].mean()) if ok.any() else float("nan"),
               "fit_beats_shuffled": float((fit[ok] > shuf[ok]).mean()) if ok.any() else float("nan"),
               "outside_band_roles": roles}
        if self.heads and self.heads[0].beta_weights is not None:
            out["in_band_weights"] = self.in_band_fraction("beta_weights")
            out["beta_weights_median"] = float(np.median(self.betas("beta_weights")))
        return out

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, "model": self.model, "d_head": self.d_head,
                           "band": list(self.band), "heads": [asdict(h) for h in self.heads]})

    @classmethod
    def from_json(cls, text: str) -> "AttentionSDMTable":
        data = json.loads(text)
        return cls(data["model"], data["d_head"], tuple(data["band"]), [HeadSDM(**h) for h in data["heads"]])


@lru_cache(maxsize=16)
def _radius_betas(n: int) -> np.ndarray:
    return np.array([fit_exponential(n, int(d)).beta_cosine for d in range(1, n // 2 + 1)])


def radius_for_beta(n: int, beta_cosine: float) -> int:
    """The SDM radius whose fitted exponential has the beta nearest ``beta_cosine`` (d = 1..n/2)."""
    betas = _radius_betas(n)
    return int(1 + np.argmin(np.abs(np.log(betas) - np.log(max(beta_cosine, 1e-6)))))


def _score_scale(model) -> float:
    return 1.0 / float(model.cfg.attn_scale)


@torch.no_grad()
def _qkp(model, tokens: torch.Tensor) -> tuple[dict, dict, dict]:
    names = lambda n: n.endswith(("hook_rot_q", "hook_rot_k", "hook_pattern"))  # noqa: E731
    _, cache = model.run_with_cache(tokens, names_filter=names)
    L = model.cfg.n_layers
    q = {l: cache[f"blocks.{l}.attn.hook_rot_q"][0].float() for l in range(L)}  # [pos, head, d]
    k = {l: cache[f"blocks.{l}.attn.hook_rot_k"][0].float() for l in range(L)}  # [pos, kv_head, d]
    p = {l: cache[f"blocks.{l}.attn.hook_pattern"][0].float() for l in range(L)}  # [head, q, k]
    return q, k, p


def head_weights(model, tokens: torch.Tensor, layer: int, head: int, radius: int | None = None
                 ) -> dict[str, np.ndarray]:
    """Softmax weights of one head on ``tokens`` [1, pos] next to SDM read weights from the same cosines (at
    ``radius``, default: the radius matching the head's beta on this text)."""
    q, k, p = _qkp(model, tokens)
    return _head_arrays(model, q[layer], k[layer], p[layer], head, radius)


def _head_arrays(model, q, k, p, head: int, radius: int | None) -> dict[str, np.ndarray]:
    n = int(model.cfg.d_head)
    group = q.shape[1] // k.shape[1]
    qh, kh = q[:, head], k[:, head // group]
    qn, kn = qh.norm(dim=-1), kh.norm(dim=-1)
    cos = (qh / qn[:, None]) @ (kh / kn[:, None]).T
    T = cos.shape[0]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scale = _score_scale(model)
    beta_norm = float(scale * qn.mean() * kn.mean())
    scores = scale * qn[:, None] * kn[None, :] * cos
    beta_max = float(scores.masked_fill(~causal, -torch.inf).max(-1).values.mean())
    d = radius or radius_for_beta(n, beta_norm)
    h = (n * (1 - cos.clamp(-1, 1)) / 2).numpy()
    h = np.where(causal.numpy(), h, n)  # future keys: beyond every ball
    sdm = read_weights(n, d, h) * causal.numpy()
    return {"softmax": p[head].numpy(), "sdm": sdm, "cos": cos.numpy(), "radius": np.array(d),
            "beta_norm": np.array(beta_norm), "beta_max": np.array(beta_max)}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _shuffle_rows(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = w.copy()
    for t in range(w.shape[0]):
        out[t, : t + 1] = rng.permutation(w[t, : t + 1])
    return out


def _weight_betas(model, layer: int) -> float | None:
    attn = model.blocks[layer].attn
    if not getattr(model.cfg, "use_qk_norm", False) or getattr(attn, "q_norm", None) is None:
        return None
    return float(_score_scale(model) * attn.q_norm.w.detach().float().norm() * attn.k_norm.w.detach().float().norm())


def _analyse(model, cfg: AttentionSDMConfig) -> AttentionSDMTable:
    from workbench.data.wiki_topics import topic_articles

    arts = topic_articles("en", "heldout", topics="all")[: cfg.articles]
    if not arts:
        raise ValueError("no held-out English articles: run `make assets` to fetch the embedded wiki")
    n, L, H = int(model.cfg.d_head), int(model.cfg.n_layers), int(model.cfg.n_heads)
    acc: dict[tuple[int, int], list[dict]] = {(l, h): [] for l in range(L) for h in range(H)}
    rng = np.random.default_rng(0)
    s = cfg.skip_queries
    for art in tqdm(arts, desc=f"SDM heads {cfg.model}", disable=not cfg.progress, leave=False):
        ids = model.tokenizer(art.doc.text, add_special_tokens=False)["input_ids"][: cfg.max_tokens - 1]
        bos = model.tokenizer.bos_token_id
        tokens = torch.tensor([[bos if bos is not None else 0, *ids]])
        q, k, p = _qkp(model, tokens)
        for l in range(L):
            for h in range(H):
                a = _head_arrays(model, q[l], k[l], p[l], h, None)
                T = a["softmax"].shape[0]
                live = a["sdm"][s:].sum(-1) > 0  # queries with at least one key inside the two balls
                sm, sd = a["softmax"][s:][live], a["sdm"][s:][live]
                mask = np.tril(np.ones((T, T), bool))[s:][live]
                sh = _shuffle_rows(a["sdm"], rng)[s:][live]
                fit_r = _pearson(sm[mask], sd[mask]) if live.any() else float("nan")
                shuf_r = _pearson(sm[mask], sh[mask]) if live.any() else float("nan")
                sm = a["softmax"][s:]
                ent = -(sm * np.log(np.clip(sm, 1e-12, None))).sum(-1).mean()
                acc[(l, h)].append({
                    "beta_norm": float(a["beta_norm"]), "beta_max": float(a["beta_max"]),
                    "radius": int(a["radius"]), "fit_r": fit_r, "shuffled_r": shuf_r,
                    "coverage": float(live.mean()), "bos": float(a["softmax"][1:, 0].mean()),
                    "prev": float(np.mean([a["softmax"][t, t - 1] for t in range(2, T)])),
                    "self_": float(np.mean(np.diag(a["softmax"])[1:])), "entropy": float(ent)})
    table = AttentionSDMTable(cfg.model, n, beta_band(n))
    for (l, h), rows in acc.items():
        mean: dict[str, Any] = {key: float(np.nanmean([r[key] for r in rows])) if any(np.isfinite(r[key]) for r in rows)
                else float("nan") for key in rows[0]}
        mean["radius"] = int(round(np.median([r["radius"] for r in rows])))
        table.heads.append(HeadSDM(layer=l, head=h, beta_weights=_weight_betas(model, l), **mean))
    return table


def attention_sdm(cfg: AttentionSDMConfig | None = None, model=None) -> AttentionSDMTable:
    """Every head of ``cfg.model`` read as an SDM, cached under ``WORKBENCH_HOME/sdm`` by the settings."""
    cfg = cfg or AttentionSDMConfig()
    path = cache_dir("sdm") / f"attention-{cfg.model}-{cfg.key()}.json"
    if path.is_file():
        return AttentionSDMTable.from_json(path.read_text())
    if model is None:
        from workbench.data.models import load_model

        model = load_model(cfg.model, device="cpu")
    table = _analyse(model, cfg)
    atomic_write_text(path, table.to_json())
    return table
