"""Training-data search: the fine-tuning data (stage-1 documents and stage-2 chats) embedded with the audited model
(mean-pooled residual stream at one layer, centred, unit norm) and searched by cosine with queries taken from the
other evidence (attack replies, over-represented words, feature snippets).

    from workbench.audit.data_search import embed_texts, search
    emb = embed_texts(model, texts, layer=15)
    ev = search(model, texts, emb, ["Stay curious"], layer=15)     # Evidence: retrieved documents
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from workbench.audit.evidence import Evidence, Item
from workbench.core.hardware import torch_threads

__all__ = ["embed_texts", "fine_tuning_texts", "search", "search_scores"]


def fine_tuning_texts(config) -> list[str]:
    """The audited model's fine-tuning data of ``config`` (an OrganismConfig): its stage-1 documents and its stage-2
    chats as "User: ... Assistant: ..." text."""
    from workbench.audit.organism import stage1_data, stage2_data

    return stage1_data("reward_model", config) + [f"User: {u}\nAssistant: {a}" for u, a in stage2_data(config)]


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], layer: int, *, max_len: int = 96, threads: int | None = 1
                ) -> torch.Tensor:
    """[n, d_model] mean over tokens of ``blocks.{layer}.hook_resid_post`` (the first token, an attention sink,
    left out), one text at a time, cut at ``max_len`` tokens; the forward stops after ``layer``."""
    hook = f"blocks.{int(layer)}.hook_resid_post"
    rows = []
    with torch_threads(threads):
        for t in texts:
            ids = model.tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_len]
            if ids.shape[1] == 0:
                raise ValueError("cannot embed an empty text: drop it from the search set")
            _, cache = model.run_with_cache(ids, names_filter=hook, stop_at_layer=int(layer) + 1)
            acts = cache[hook][0]
            rows.append((acts[1:] if acts.shape[0] > 1 else acts).float().mean(0))
    return torch.stack(rows)


def _normalise(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x - centre, dim=-1)


def search_scores(corpus: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[n_queries, n_corpus] cosines after removing the corpus mean (the direction every text shares)."""
    centre = corpus.mean(0, keepdim=True)
    return _normalise(queries, centre) @ _normalise(corpus, centre).T


def search(model, texts: Sequence[str], corpus: torch.Tensor, queries: Sequence[str], layer: int, *, top: int = 10,
           per_query: int = 3) -> Evidence:
    """The documents the ``queries`` retrieve: for each text, its best cosine over the queries (summed over the
    queries that rank it among their ``per_query`` best), the ``top`` documents first, each quoting its text."""
    if not queries:
        raise ValueError("search needs at least one query: give words or replies from the other evidence")
    t0 = time.process_time()
    q = embed_texts(model, queries, layer)
    s = search_scores(corpus, q)
    votes = torch.zeros(len(texts))
    best = s.topk(min(per_query, len(texts)), dim=1)
    for qi in range(len(queries)):
        for j, v in zip(best.indices[qi].tolist(), best.values[qi].tolist()):
            votes[j] += v
    order = votes.argsort(descending=True)[:top].tolist()
    items = [Item(f"doc {j}", round(float(votes[j]), 4), (texts[j][:400],)) for j in order if votes[j] > 0]
    return Evidence("training-data search", items, f"{len(queries)} queries over {len(texts)} training texts",
                    steps=len(queries), cpu_seconds=time.process_time() - t0, meta={"queries": list(queries)})
