"""Concept probing: do an SAE's features carry concepts a person labelled, better than the model's own units?

Ground truth is the embedded wiki's article ``topic`` (:mod:`workbench.data.wiki_topics`: 7 topics shared by
English, Spanish and French). Each article is one example; each *unit* is mean-pooled over the article's tokens
(BOS left out). Four kinds of unit are probed on the same articles and the same hook (docs/methods.md §20):

* ``features``: the SAE's latents;
* ``neurons``: the MLP neurons of the SAE's block (``blocks.L.mlp.hook_post``, the MLP whose output the
  residual stream at ``blocks.L.hook_resid_post`` has just received);
* ``random``: as many seeded random unit directions of the residual stream as there are features, each
  thresholded so that it fires on the same fraction of the training articles' tokens as a feature paired with it
  (``max(x . r - t, 0)``), so that sparsity is matched;
* ``pca``: the principal axes of the residual stream (fit on the training articles' tokens).

**Sparse probing at k** (as SAEBench does, with a scale-free selection): one topic against the rest; the k units
with the largest |mean difference| between the classes over their pooled standard deviation on the *training*
articles are kept, a logistic regression (sklearn, standardised inputs, balanced class weights) is fit on them,
and the balanced accuracy is measured on *held-out* articles (the corpus' own held-out split, never trained on by
an SAE of the default corpus). Scores are averaged over the topics. Settings: each language on its own, and the
cross-lingual one: probes fit on English articles, tested on Spanish and French held-out articles.

    from workbench.analysis.concept_probing import ProbeConfig, concept_probing
    card = concept_probing(model, sae)            # ProbeScorecard
    print(card.format_table())                     # setting x k x {features, neurons, random, pca}
    card.feature_scores                            # {feature: best held-out topic AUC, rescaled to [0, 1]}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike, SAELike
from workbench.core.config import known_fields_only
from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.data.hooks import hook_layer, sae_hook
from workbench.data.wiki_topics import TopicArticle, topic_articles

__all__ = ["KINDS", "ArticleActivations", "PooledUnits", "article_activations", "probing_articles", "ProbeConfig", "ProbeScorecard", "concept_probing", "feature_topic_auc",
           "pooled_units", "sparse_probe_accuracy"]

KINDS = ("features", "neurons", "random", "pca")
KIND_NAMES = {"features": "SAE features", "neurons": "MLP neurons", "random": "random directions",
              "pca": "residual PCA axes"}
PROBING_FORMAT, PROBING_VERSION = "workbench-concept-probing", 1
PROBING_JSON = "concept_probing.json"


@dataclass
class ProbeConfig:
    """Sizes of a concept-probing run. The defaults take about a minute of model time on 2 CPU cores."""

    ks: tuple[int, ...] = (1, 2, 5)
    languages: tuple[str, ...] = ("en", "es", "fr")
    cross_lingual_from: str | None = "en"  # probes fit on this language are also tested on the others
    train_per_topic: int = 40  # training-split articles per topic and language
    test_per_topic: int = 30  # held-out articles per topic and language (the held-out split has 8-104)
    max_tokens: int = 64  # tokens of each article after BOS
    batch_size: int = 16
    seed: int = 0
    regularization: float = 1.0  # sklearn's C
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ProbeConfig.ks must be positive unit counts, got {self.ks}")
        if self.cross_lingual_from is not None and self.cross_lingual_from not in self.languages:
            raise ValueError(f"ProbeConfig.cross_lingual_from={self.cross_lingual_from!r} is not one of "
                             f"languages={self.languages}")
        if self.train_per_topic < 2 or self.test_per_topic < 1:
            raise ValueError("ProbeConfig needs train_per_topic >= 2 and test_per_topic >= 1")

    @classmethod
    def smoke(cls) -> "ProbeConfig":
        return cls(train_per_topic=6, test_per_topic=4, max_tokens=24, ks=(1, 2))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProbeConfig":
        d = dict(known_fields_only(cls, d, what="a ProbeConfig"))
        d["ks"], d["languages"] = tuple(d.get("ks", cls.ks)), tuple(d.get("languages", cls.languages))
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------------
# Pooled units (one model pass)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PooledUnits:
    """Per article (rows) and unit kind: the mean activation over its tokens; ``split`` says which rows train."""

    units: dict[str, Tensor]  # kind -> [n_articles, n_units] float32
    topics: list[str]
    languages: list[str | None]  # the documents' own fields (wiki articles always have both)
    train: np.ndarray  # bool [n_articles]: training-split article
    titles: list[str | None]


def _tokens(tokenizer, text: str, max_tokens: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"][:max_tokens]
    bos = tokenizer.bos_token_id
    return ([int(bos)] if bos is not None else []) + [int(t) for t in ids]


def _articles(cfg: ProbeConfig) -> tuple[list[TopicArticle], np.ndarray]:
    rows: list[TopicArticle] = []
    train: list[bool] = []
    for lang in cfg.languages:
        for split, n in (("train", cfg.train_per_topic), ("heldout", cfg.test_per_topic)):
            got = topic_articles(lang, split, max_per_topic=n, seed=cfg.seed)
            rows += got
            train += [split == "train"] * len(got)
    return rows, np.asarray(train)


@dataclass
class ArticleActivations:
    """One model pass over the probing articles: per article the residual at the hook on each token (BOS left out,
    bf16) and the mean of the preceding MLP's neurons. Shared by every SAE probed at that hook."""

    hook: str
    resid: list[Tensor]  # per article [n_tokens, d_model]
    neurons: Tensor  # [n_articles, d_mlp]
    articles: list[TopicArticle]
    train: np.ndarray


@torch.no_grad()
def article_activations(model: ModelLike, articles: Sequence[TopicArticle], train: np.ndarray, hook: str,
                        cfg: ProbeConfig | None = None) -> ArticleActivations:
    """Run ``model`` once over ``articles`` (their first ``cfg.max_tokens`` tokens after BOS)."""
    from workbench.data.forward import hook_forward  # the fastest exact forward for these hooks

    cfg = cfg or ProbeConfig()
    layer = hook_layer(hook)
    if layer is None:
        raise ValueError(f"cannot tell the layer of hook {hook!r}: concept probing needs a blocks.L hook")
    mlp = f"blocks.{layer}.mlp.hook_post"
    forward = hook_forward(model, [hook, mlp])
    device = next(model.parameters()).device
    seqs = [_tokens(model.tokenizer, a.doc.text, cfg.max_tokens) for a in articles]
    order = np.argsort([len(s) for s in seqs], kind="stable")  # similar lengths share a batch: little padding
    resid: list[Tensor] = [torch.empty(0)] * len(seqs)
    neurons = torch.zeros(len(seqs), int(model.cfg.d_mlp))
    pad = int(model.tokenizer.pad_token_id or 0)
    for start in tqdm(range(0, len(seqs), cfg.batch_size), desc="probe articles", disable=not cfg.progress,
                      leave=False, dynamic_ncols=True):
        idx = order[start:start + cfg.batch_size]
        width = max(len(seqs[i]) for i in idx)
        toks = torch.full((len(idx), width), pad, dtype=torch.long)
        for r, i in enumerate(idx):
            toks[r, :len(seqs[i])] = torch.tensor(seqs[i])  # right padding: causal, earlier tokens unchanged
        acts = forward(toks.to(device))
        for r, i in enumerate(idx):
            n = len(seqs[i])
            resid[i] = acts[hook][r, 1:n].to(torch.bfloat16).cpu()
            neurons[i] = acts[mlp][r, 1:n].float().mean(0).cpu()
    return ArticleActivations(hook, resid, neurons, list(articles), np.asarray(train, bool))


@torch.no_grad()
def pooled_units(sae: SAELike, acts: ArticleActivations, seed: int = 0) -> PooledUnits:
    """Mean-pooled features, neurons, thresholded random directions and PCA projections of each article."""
    if acts.resid and acts.resid[0].shape[-1] != sae.cfg.d_in:
        raise ValueError(f"d_model mismatch: hook {acts.hook!r} gives {acts.resid[0].shape[-1]} but the SAE takes "
                         f"d_in={sae.cfg.d_in}")
    feats = torch.stack([sae.encode(x.to(sae.device, sae.dtype)).float().mean(0).cpu() for x in acts.resid])
    units = {"features": feats, "neurons": acts.neurons, **_baselines(acts.resid, sae, acts.train, seed)}
    return PooledUnits(units, [a.topic for a in acts.articles], [a.doc.lang for a in acts.articles], acts.train,
                       [a.doc.title for a in acts.articles])


def _baselines(resid_tok: list[Tensor], sae: SAELike, train: np.ndarray, seed: int, max_tokens: int = 16_384
               ) -> dict[str, Tensor]:
    """Random directions at the features' densities, and PCA axes, from the per-token residuals (densities,
    thresholds and axes from at most ``max_tokens`` seeded training tokens)."""
    g = torch.Generator().manual_seed(seed)
    train_tok = torch.cat([resid_tok[i] for i in np.flatnonzero(train)])
    if train_tok.shape[0] > max_tokens:
        train_tok = train_tok[torch.randperm(train_tok.shape[0], generator=g)[:max_tokens]]
    train_tok = train_tok.float()
    d_model, d_sae = train_tok.shape[1], int(sae.cfg.d_sae)
    fired = torch.zeros(d_sae)
    for i in range(0, train_tok.shape[0], 2048):
        fired += (sae.encode(train_tok[i:i + 2048].to(sae.device, sae.dtype)) > 0).float().sum(0).cpu()
    density = fired / train_tok.shape[0]
    dirs = torch.randn(d_model, d_sae, generator=g)
    dirs /= dirs.norm(dim=0, keepdim=True)
    pair = density[torch.randperm(d_sae, generator=g)].clamp(1.0 / train_tok.shape[0], 1.0)  # a feature's density
    thresholds = torch.cat([_column_quantiles(train_tok @ dirs[:, j:j + 512], 1.0 - pair[j:j + 512])
                            for j in range(0, d_sae, 512)])
    mean = train_tok.mean(0)
    _, _, v = torch.linalg.svd(train_tok - mean, full_matrices=False)  # rows of v: principal axes
    rand = torch.stack([(x.float() @ dirs - thresholds).clamp_min(0).mean(0) for x in resid_tok])
    pooled = torch.stack([x.float().mean(0) for x in resid_tok])
    return {"random": rand, "pca": (pooled - mean) @ v.T}


def _column_quantiles(x: Tensor, q: Tensor) -> Tensor:
    """Per column j, the q[j] quantile of x[:, j] (nearest rank)."""
    s = x.sort(dim=0).values
    idx = (q.clamp(0, 1) * (x.shape[0] - 1)).round().long()
    return s.gather(0, idx[None, :]).squeeze(0)


# ----------------------------------------------------------------------------------------------------------------
# Probes (pure numpy / sklearn)
# ----------------------------------------------------------------------------------------------------------------


def _select(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The k columns with the largest |mean difference| / pooled std between y == 1 and y == 0."""
    pos, neg = x[y == 1], x[y == 0]
    diff = np.abs(pos.mean(0) - neg.mean(0))
    sd = np.sqrt(0.5 * (pos.var(0) + neg.var(0)))
    score = np.where(sd > 1e-12, diff / np.maximum(sd, 1e-12), 0.0)
    return np.argsort(-score, kind="stable")[:k]


def sparse_probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int,
                          regularization: float = 1.0) -> tuple[float, np.ndarray]:
    """Balanced accuracy on the test rows of a logistic probe on the k selected units; and those units."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    if len(set(y_train.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        raise ValueError("each split needs both classes: raise ProbeConfig.train_per_topic / test_per_topic")
    cols = _select(x_train, y_train, k)
    mu, sd = x_train[:, cols].mean(0), x_train[:, cols].std(0) + 1e-6
    clf = LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000)
    clf.fit((x_train[:, cols] - mu) / sd, y_train)
    pred = clf.predict((x_test[:, cols] - mu) / sd)
    return float(balanced_accuracy_score(y_test, pred)), cols


def feature_topic_auc(units: Tensor, topics: Sequence[str]) -> tuple[Tensor, list[str]]:
    """[n_units, n_topics] ROC AUC of each unit's pooled activation for each topic (one against the rest), ranks
    with ties averaged; and the topic names (columns)."""
    names = sorted(set(topics))
    x = units.double()
    ranks = _average_ranks(x)  # [n, units]
    out = torch.empty(x.shape[1], len(names), dtype=torch.float64)
    lab = np.asarray(topics)
    for j, t in enumerate(names):
        pos = torch.from_numpy(lab == t)
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        out[:, j] = (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1)
    return out.float(), names


def _average_ranks(x: Tensor) -> Tensor:
    """Column-wise ranks (1-based) with ties given their average rank."""
    n = x.shape[0]
    order = x.argsort(dim=0, stable=True)
    sorted_x = x.gather(0, order)
    pos = torch.arange(1, n + 1, dtype=torch.float64)[:, None].expand_as(x)
    # average over runs of equal values: first and last index of each run via cumulative max/min
    new = torch.ones_like(sorted_x, dtype=torch.bool)
    new[1:] = sorted_x[1:] != sorted_x[:-1]
    run = new.long().cumsum(0)  # run id per sorted row
    first = torch.zeros_like(pos).scatter_reduce(0, run - 1, pos, "amin", include_self=False)
    last = torch.zeros_like(pos).scatter_reduce(0, run - 1, pos, "amax", include_self=False)
    avg_sorted = 0.5 * (first.gather(0, run - 1) + last.gather(0, run - 1))
    return torch.empty_like(avg_sorted).scatter_(0, order, avg_sorted)


# ----------------------------------------------------------------------------------------------------------------
# The scorecard
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeScorecard:
    """Balanced accuracy of k-unit topic probes per setting and kind; per-feature topic AUCs for reading order."""

    rows: list[dict]  # {"setting", "k", "features", "neurons", "random", "pca"}: mean over topics
    per_topic: list[dict]  # {"setting", "k", "topic", kind: accuracy, ... , "features_units": [..]}
    feature_scores: dict[int, float]  # feature -> 2 * (best topic AUC - 0.5), clipped at 0
    feature_topics: dict[int, str]  # feature -> that topic
    n_articles: dict[str, int]  # "train" / "test" counts
    config: dict = field(default_factory=dict)

    def table(self, setting: str, k: int) -> dict | None:
        return next((r for r in self.rows if r["setting"] == setting and r["k"] == k), None)

    def format_table(self) -> str:
        head = f"{'setting':<10} {'k':>2}  " + "  ".join(f"{KIND_NAMES[k]:>18}" for k in KINDS)
        lines = [head] + [f"{r['setting']:<10} {r['k']:>2}  " + "  ".join(f"{r[k]:>18.3f}" for k in KINDS)
                          for r in self.rows]
        return "\n".join(lines)

    def summary(self) -> dict:
        return {"rows": self.rows, "n_articles": self.n_articles,
                "note": "balanced accuracy of one-topic-vs-rest probes on k mean-pooled units, averaged over the 7 "
                        "topics shared by en/es/fr; probes fit on training-split articles, tested on held-out "
                        "articles (docs/methods.md §20)"}

    def _repr_html_(self) -> str:
        cells = "".join(f"<th>{KIND_NAMES[k]}</th>" for k in KINDS)
        body = "".join("<tr><td>{}</td><td>{}</td>{}</tr>".format(
            r["setting"], r["k"], "".join(f"<td>{r[k]:.3f}</td>" for k in KINDS)) for r in self.rows)
        return (f"<table><tr><th>setting</th><th>k</th>{cells}</tr>{body}</table>"
                f"<p>{self.summary()['note']}</p>")

    def to_dict(self) -> dict:
        return {**asdict(self), "feature_scores": {str(k): v for k, v in self.feature_scores.items()},
                "feature_topics": {str(k): v for k, v in self.feature_topics.items()}}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROBING_JSON
        write_tagged_json(path, self.to_dict(), format=PROBING_FORMAT, format_version=PROBING_VERSION)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ProbeScorecard":
        path = Path(path)
        if path.is_dir():
            path = path / PROBING_JSON
        d = read_tagged_json(path, format=PROBING_FORMAT, what="a concept-probing result",
                             fix="recompute it with workbench.analysis.concept_probing.concept_probing",
                             max_version=PROBING_VERSION)
        return cls(rows=d["rows"], per_topic=d["per_topic"],
                   feature_scores={int(k): float(v) for k, v in d["feature_scores"].items()},
                   feature_topics={int(k): str(v) for k, v in d["feature_topics"].items()},
                   n_articles=d["n_articles"], config=d.get("config", {}))


def _settings(pooled: PooledUnits, cfg: ProbeConfig) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, training rows, test rows) per setting."""
    lang = np.asarray(pooled.languages)
    out = [(l, pooled.train & (lang == l), ~pooled.train & (lang == l)) for l in cfg.languages]
    src = cfg.cross_lingual_from
    if src is not None:
        out += [(f"{src}->{l}", pooled.train & (lang == src), ~pooled.train & (lang == l))
                for l in cfg.languages if l != src]
    return out


def score_probes(pooled: PooledUnits, cfg: ProbeConfig) -> ProbeScorecard:
    """Every setting x k x kind x topic, from pooled units (no model needed)."""
    topics_all = np.asarray(pooled.topics)
    names = sorted(set(pooled.topics))
    xs = {k: v.numpy().astype(np.float64) for k, v in pooled.units.items()}
    rows, per_topic = [], []
    for setting, tr, te in _settings(pooled, cfg):
        for k in cfg.ks:
            accs: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for topic in names:
                y_tr, y_te = (topics_all[tr] == topic).astype(int), (topics_all[te] == topic).astype(int)
                if y_tr.sum() < 2 or y_te.sum() < 1 or y_te.sum() == len(y_te):
                    continue
                entry: dict[str, Any] = {"setting": setting, "k": k, "topic": topic}
                for kind in KINDS:
                    acc, cols = sparse_probe_accuracy(xs[kind][tr], y_tr, xs[kind][te], y_te, k, cfg.regularization)
                    accs[kind].append(acc)
                    entry[kind] = acc
                    entry[f"{kind}_units"] = [int(c) for c in cols]
                per_topic.append(entry)
            if accs["features"]:
                rows.append({"setting": setting, "k": k, "n_topics": len(accs["features"]),
                             **{kind: float(np.mean(v)) for kind, v in accs.items()}})
    auc, topic_names = feature_topic_auc(pooled.units["features"], pooled.topics)
    best, arg = auc.max(dim=1)
    fired = (pooled.units["features"] > 0).sum(0)
    scores = {int(i): float(max(0.0, 2 * (float(best[i]) - 0.5))) for i in torch.nonzero(fired >= 3).flatten()}
    return ProbeScorecard(rows=rows, per_topic=per_topic, feature_scores=scores,
                          feature_topics={i: topic_names[int(arg[i])] for i in scores},
                          n_articles={"train": int(pooled.train.sum()), "test": int((~pooled.train).sum())},
                          config=asdict(cfg))


def probing_articles(model: ModelLike, hook: str, config: ProbeConfig | None = None) -> ArticleActivations:
    """The model pass over the configured articles, to share between several SAEs at ``hook``."""
    cfg = config or ProbeConfig()
    articles, train = _articles(cfg)
    return article_activations(model, articles, train, hook, cfg)


def concept_probing(model: ModelLike, sae: SAELike, config: ProbeConfig | None = None, *, hook: str | None = None,
                    activations: ArticleActivations | None = None) -> ProbeScorecard:
    """The concept-probing scorecard of ``sae`` on ``model`` over the embedded wiki's topics (module docstring).
    ``activations``: a :func:`probing_articles` pass at the SAE's hook to reuse (same config)."""
    cfg = config or ProbeConfig()
    hook = sae_hook(sae, hook)
    acts = activations if activations is not None else probing_articles(model, hook, cfg)
    if acts.hook != hook:
        raise ValueError(f"the article activations are of {acts.hook!r}, the SAE reads {hook!r}: recompute them "
                         f"with probing_articles(model, {hook!r}, config)")
    return score_probes(pooled_units(sae, acts, cfg.seed), cfg)
