"""Frozen article embeddings for the split-wiki-topics continual task: each embedded English wiki article becomes the
mean of one model's residual stream (one layer, BOS left out) over its first tokens, labelled by its ``topic``.

This plays the part of the frozen ImageNet32 image embeddings the SDMLP paper learns Split CIFAR-10 from: a
pretrained network's representation, on which only a small classifier is trained, one pair of classes at a time.
The result is cached as safetensors under ``WORKBENCH_HOME/sdm``, keyed by the settings.

    cfg = WikiEmbeddingConfig()                          # Gemma 3, layer 9, 10 topics x 100 articles, 64 tokens
    emb = wiki_topic_embeddings(cfg)                     # WikiEmbeddings(x [N, d_model], y [N], topics, train mask)
    data = wiki_split(emb)                               # SplitData: 5 tasks of 2 topics, per-topic train/test
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.home import cache_dir
from workbench.core.persist import load_tensors, save_tensors
from workbench.sdm.continual import SplitData

__all__ = ["WikiEmbeddingConfig", "WikiEmbeddings", "wiki_split", "wiki_topic_embeddings"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class WikiEmbeddingConfig:
    model: str = "gemma-3-270m"
    layer: int = 9  # residual stream after this block (Gemma-3-270M has 18)
    topics: int = 10  # the most frequent English topics; an even number gives tasks of 2
    per_topic: int = 100  # articles per topic (train split of the corpus), a quarter kept for testing
    max_tokens: int = 64
    seed: int = 0
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self):
        if self.topics < 4 or self.topics % 2:
            raise ValueError(f"topics={self.topics}: need an even number >= 4 (tasks of 2 topics, at least 2 tasks)")
        if self.per_topic < 4:
            raise ValueError(f"per_topic={self.per_topic}: need >= 4 articles per topic to keep some for testing")

    @classmethod
    def smoke(cls) -> "WikiEmbeddingConfig":
        return cls(per_topic=16, max_tokens=32)

    def key(self) -> str:
        d = asdict(self)
        d.pop("progress")
        d.pop("batch_size")
        return hashlib.sha256(json.dumps({**d, "v": FORMAT_VERSION}, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class WikiEmbeddings:
    x: Tensor  # [N, d_model] float32
    y: Tensor  # [N] topic index
    train: Tensor  # [N] bool: in the training half of its topic
    topics: list[str]
    titles: list[str]


def _embed_batch(model, texts: list[str], layer: int, max_tokens: int) -> Tensor:
    """Mean residual stream of each text, one padded forward for the batch. Right padding in a causal model leaves
    the real positions untouched; the mean runs over the real positions after BOS (whose huge norm carries no
    content)."""
    bos = model.tokenizer.bos_token_id
    rows = [[bos if bos is not None else 0, *model.tokenizer(t, add_special_tokens=False)["input_ids"][: max_tokens - 1]]
            for t in texts]
    T = max(len(r) for r in rows)
    tokens = torch.tensor([r + [r[-1]] * (T - len(r)) for r in rows])
    mask = torch.tensor([[0.0] + [1.0] * (len(r) - 1) + [0.0] * (T - len(r)) for r in rows])
    name = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name, stop_at_layer=layer + 1)
    resid = cache[name].float()
    return (resid * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)


def _compute(cfg: WikiEmbeddingConfig, model) -> WikiEmbeddings:
    from workbench.data.wiki_topics import language_topics, topic_articles

    topics = language_topics("en")[: cfg.topics]
    if len(topics) < cfg.topics:
        raise ValueError(f"the English wiki has {len(topics)} topics, fewer than topics={cfg.topics}: lower it")
    arts = topic_articles("en", "train", topics=topics, max_per_topic=cfg.per_topic, seed=cfg.seed)
    if model is None:
        from workbench.data.models import load_model

        model = load_model(cfg.model, device="cpu")
    if not 0 <= cfg.layer < model.cfg.n_layers:
        raise ValueError(f"layer={cfg.layer} outside 0..{model.cfg.n_layers - 1} for {cfg.model}")
    xs, ys, train, titles, seen = [], [], [], [], {t: 0 for t in topics}
    n_test = max(1, cfg.per_topic // 4)
    for i in tqdm(range(0, len(arts), cfg.batch_size), desc=f"embed wiki ({cfg.model} L{cfg.layer})",
                  disable=not cfg.progress, leave=False):
        xs.append(_embed_batch(model, [a.doc.text for a in arts[i:i + cfg.batch_size]], cfg.layer, cfg.max_tokens))
    for a in arts:
        ys.append(topics.index(a.topic))
        train.append(seen[a.topic] >= n_test)  # the order is a seeded hash order: the first ones are a sample
        seen[a.topic] += 1
        titles.append(a.doc.text[:60])
    return WikiEmbeddings(torch.cat(xs), torch.tensor(ys), torch.tensor(train), topics, titles)


def wiki_topic_embeddings(cfg: WikiEmbeddingConfig | None = None, model=None) -> WikiEmbeddings:
    """The embeddings of ``cfg``, from the cache when there (``model``: an already loaded one to reuse)."""
    cfg = cfg or WikiEmbeddingConfig()
    path = cache_dir("sdm") / f"wiki-embed-{cfg.model}-{cfg.key()}.safetensors"
    if path.is_file():
        t, meta = load_tensors(path, "delete it and call wiki_topic_embeddings again to recompute")
        return WikiEmbeddings(t["x"], t["y"], t["train"].bool(), json.loads(meta["topics"]),
                              json.loads(meta["titles"]))
    emb = _compute(cfg, model)
    save_tensors({"x": emb.x, "y": emb.y, "train": emb.train.to(torch.uint8)}, path,
                 metadata={"topics": json.dumps(emb.topics), "titles": json.dumps(emb.titles),
                           "config": json.dumps(asdict(cfg))})
    return emb


def wiki_split(emb: WikiEmbeddings) -> SplitData:
    """Class-incremental split over the topics in frequency order: tasks (topic 0, 1), (2, 3), ..."""
    tr, te = emb.train.numpy(), ~emb.train.numpy()
    x, y = emb.x.numpy(), emb.y.numpy()
    order = np.arange(len(emb.topics))
    tasks = [order[i:i + 2].tolist() for i in range(0, len(order) - 1, 2)]
    return SplitData("wiki-topics", torch.as_tensor(x[tr]), torch.as_tensor(y[tr]), torch.as_tensor(x[te]),
                     torch.as_tensor(y[te]), tasks, list(emb.topics))
