"""Paired activations: two models over the same documents, each at its own hook, aligned token for token
(docs/methods.md §13).

    paired = harvest_pair(gemma, smol, docs, "runs/pair", hook_a="blocks.9.hook_resid_post",
                          hook_b="blocks.20.hook_resid_post")
    source = paired.source(holdout_tokens=4096)           # a BatchSource for workbench.sae.train
    spec = crosscoder_spec(paired, "batchtopk", 4096, k=32, dedicated=True)

On disk a paired store is two ordinary activation stores (:mod:`workbench.data.store`, the same shards, sha256
checksums and crash-safe resumable writer) plus ``pair.json``::

    <out>/a/   model A's store: row n = model A's activation at the n-th paired position
    <out>/b/   model B's store: row n = model B's activation at the same text position
    <out>/pair.json  models, hooks, widths, per-model scales, alignment fractions, the documents (language, kind)

Both stores hold the same number of rows in the same order (the positions where both tokenizations end a token at
the same character, :mod:`workbench.diffing.alignment`), cut into "contexts" of ``context_size`` rows; their
``doc_ids`` match row for row and ``positions`` are each model's own token index in the document. BOS is never
stored, and special tokens (chat-template markers) and text outside a document's ``keep_spans`` are never paired.
With the same tokenizer on both sides (a model and its fine-tune) every token is kept.

Resume: the document list is deterministic and the alignment is recomputed from tokenization alone (cheap), so a
rerun with the same arguments skips the documents whose rows both stores already hold and continues.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from workbench.core.persist import read_tagged_json, write_tagged_json
from workbench.data.hooks import hook_layer
from workbench.data.store_reader import ActivationStore
from workbench.data.store_writer import StoreWriter
from workbench.diffing.alignment import AlignmentStats, align_offsets, special_positions, tokenize_with_offsets
from workbench.diffing.documents import PairedDocument
from workbench.sae.model import SAEMetadata
from workbench.sae.sources import TensorSource

__all__ = ["PAIR_FORMAT", "PairConfig", "PairedStore", "crosscoder_spec", "harvest_pair", "plan_alignment"]

PAIR_FORMAT = "workbench-paired-store"
PAIR_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PairConfig:
    """``max_tokens``: tokens per document and model (longer documents are cut where both fit);
    ``context_size`` rows make one store context; ``shard_contexts`` contexts one shard; ``batch_docs`` documents
    are run through each model at once; ``dtype`` is the stores' dtype."""

    max_tokens: int = 128
    context_size: int = 64
    shard_contexts: int = 16
    batch_docs: int = 8
    dtype: str = "bfloat16"  # float16 saturates at 65504; Gemma residual streams come close

    def __post_init__(self) -> None:
        if min(self.max_tokens, self.context_size, self.shard_contexts, self.batch_docs) < 1:
            raise ValueError(f"every PairConfig size must be >= 1, got {self}")


@dataclass
class _DocPlan:
    doc: PairedDocument
    ids_a: list[int]
    ids_b: list[int]
    idx_a: list[int]  # token indices (without BOS) of the paired positions
    idx_b: list[int]


def _cut(ids: list[int], offsets: list, max_tokens: int) -> int:
    """The character where the first ``max_tokens`` tokens end."""
    return offsets[min(len(ids), max_tokens) - 1][1] if ids else 0


def plan_alignment(tok_a, tok_b, documents: Sequence[PairedDocument], max_tokens: int = 128
                   ) -> tuple[list[_DocPlan], AlignmentStats]:
    """Tokenize every document with both tokenizers and align them (no model runs). Documents are cut at the
    first character where both tokenizations stay within ``max_tokens``."""
    plans, stats = [], AlignmentStats()
    for doc in documents:
        ids_a, off_a = tokenize_with_offsets(tok_a, doc.text)
        ids_b, off_b = tokenize_with_offsets(tok_b, doc.text)
        limit = min(_cut(ids_a, off_a, max_tokens), _cut(ids_b, off_b, max_tokens))
        n_a = sum(1 for o in off_a if o[1] <= limit)
        n_b = sum(1 for o in off_b if o[1] <= limit)
        ids_a, off_a, ids_b, off_b = ids_a[:n_a], off_a[:n_a], ids_b[:n_b], off_b[:n_b]
        spans = doc.keep_spans
        idx_a, idx_b = align_offsets(off_a, off_b, keep_spans=spans, skip_a=special_positions(tok_a, ids_a),
                                     skip_b=special_positions(tok_b, ids_b))
        # the fraction kept counts the tokens that could be paired at all (inside the kept spans)
        seen_a = sum(1 for o in off_a if spans is None or any(lo < o[1] <= hi for lo, hi in spans))
        seen_b = sum(1 for o in off_b if spans is None or any(lo < o[1] <= hi for lo, hi in spans))
        stats.add(doc.language, seen_a, seen_b, len(idx_a))
        plans.append(_DocPlan(doc, ids_a, ids_b, idx_a, idx_b))
    return plans, stats


def _with_bos(tokenizer, ids: list[int]) -> tuple[list[int], int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or (ids and ids[0] == bos):
        return list(ids), 0
    return [int(bos)] + list(ids), 1


@torch.no_grad()
def _forward(model, hook: str, seqs: list[list[int]]) -> list[Tensor]:
    """Activations at ``hook`` for each sequence (right-padded batch; causal attention ignores the padding)."""
    n = max(len(s) for s in seqs)
    pad = int(getattr(model.tokenizer, "pad_token_id", None) or 0)
    tokens = torch.full((len(seqs), n), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    device = next(model.parameters()).device
    layer = hook_layer(hook)
    grabbed: dict[str, Tensor] = {}

    def grab(act, hook):
        grabbed["x"] = act.detach().to("cpu", torch.float32)

    kwargs = {"stop_at_layer": layer + 1} if layer is not None else {}
    model.run_with_hooks(tokens.to(device), fwd_hooks=[(hook, grab)], **kwargs)
    return [grabbed["x"][i, : len(s)] for i, s in enumerate(seqs)]


def _model_name(model) -> str:
    return str(getattr(model, "workbench_name", None) or model.cfg.model_name)


def harvest_pair(model_a, model_b, documents: Sequence[PairedDocument], out: str | Path, *, hook_a: str,
                 hook_b: str, config: PairConfig | None = None, progress: bool = True) -> "PairedStore":
    """Run both models over ``documents`` and write the paired store ``out`` (see the module docstring);
    resumable: rerun with the same arguments after an interruption."""
    from tqdm.auto import tqdm

    cfg = config or PairConfig()
    out = Path(out)
    if not documents:
        raise ValueError("no documents to harvest: pass wiki_documents(...) and/or chat_documents(...)")
    for model, hook in ((model_a, hook_a), (model_b, hook_b)):
        if hook not in model.hook_dict:
            raise ValueError(f"hook {hook!r} is not a hook of {_model_name(model)}: use e.g. "
                             f"'blocks.{model.cfg.n_layers // 2}.hook_resid_post'")
    plans, stats = plan_alignment(model_a.tokenizer, model_b.tokenizer, documents, cfg.max_tokens)
    names = (_model_name(model_a), _model_name(model_b))
    corpus = {"documents": len(documents), "max_tokens": cfg.max_tokens, "pair_with": list(names)}
    writers = [StoreWriter(out / side, model_name=name, hooks=[hook], d_model=int(model.cfg.d_model),
                           context_size=cfg.context_size, dtype=cfg.dtype, shard_contexts=cfg.shard_contexts,
                           corpus=corpus, prepend_bos=False, extra={"paired": side})
               for side, name, hook, model in (("a", names[0], hook_a, model_a), ("b", names[1], hook_b, model_b))]
    try:
        rows_per_shard = cfg.context_size * cfg.shard_contexts
        done_rows = min(w.n_complete_shards for w in writers) * rows_per_shard
        total_rows = sum(len(p.idx_a) for p in plans) // cfg.context_size * cfg.context_size
        if not all(w.is_complete for w in writers):
            _harvest_rows(model_a, model_b, hook_a, hook_b, plans, writers, cfg, done_rows, total_rows, progress,
                          tqdm)
        for w in writers:
            if not w.is_complete:
                w.finalize()
    finally:
        for w in writers:
            w.close()
    store_a, store_b = ActivationStore.open(out / "a"), ActivationStore.open(out / "b")
    scales = [_mean_norm_scale(s) for s in (store_a, store_b)]
    write_tagged_json(out / "pair.json", {
        "models": list(names), "hooks": [hook_a, hook_b],
        "d_models": [int(model_a.cfg.d_model), int(model_b.cfg.d_model)],
        "n_tokens": int(store_a.n_tokens), "model_scales": scales, "alignment": stats.to_dict(),
        "same_tokenizer": model_a.tokenizer.get_vocab() == model_b.tokenizer.get_vocab(),
        "config": cfg.__dict__, "documents": [p.doc.to_dict() for p in plans]},
        format=PAIR_FORMAT, format_version=PAIR_FORMAT_VERSION, indent=1)
    return PairedStore.open(out)


def _harvest_rows(model_a, model_b, hook_a, hook_b, plans, writers, cfg, done_rows, total_rows, progress, tqdm):
    rows_per_shard = cfg.context_size * cfg.shard_contexts
    buf: dict[str, list] = {k: [] for k in ("tok_a", "tok_b", "doc", "pos_a", "pos_b", "act_a", "act_b")}
    have = 0
    row = 0  # global paired-row index of the next row produced
    shard = done_rows // rows_per_shard
    bar = tqdm(total=total_rows, initial=min(done_rows, total_rows), unit="tok", desc="paired harvest",
               disable=not progress, dynamic_ncols=True)

    def flush(final: bool) -> None:
        nonlocal have, shard
        while have >= rows_per_shard or (final and have >= cfg.context_size):
            n = min(have, rows_per_shard) // cfg.context_size * cfg.context_size
            cat = {k: (torch.cat(v) if k.startswith("act") else np.concatenate(v)) for k, v in buf.items()}
            head = {k: v[:n] for k, v in cat.items()}
            buf.update({k: [v[n:]] for k, v in cat.items()})
            have -= n
            shape = (n // cfg.context_size, cfg.context_size)
            for side, w in zip("ab", writers):
                if w.n_complete_shards == shard:  # the other store may already hold it (killed in between)
                    w.write_shard(shard, head[f"tok_{side}"].reshape(shape), head["doc"].reshape(shape),
                                  head[f"pos_{side}"].reshape(shape), {w.hooks[0]: head[f"act_{side}"]})
            shard += 1
            bar.update(n)

    pending: list[_DocPlan] = []

    def run(batch: list[_DocPlan]) -> None:
        nonlocal have, row
        seqs = [[_with_bos(m.tokenizer, getattr(p, f"ids_{s}")) for p in batch] for m, s in ((model_a, "a"),
                                                                                             (model_b, "b"))]
        acts_a = _forward(model_a, hook_a, [s for s, _ in seqs[0]])
        acts_b = _forward(model_b, hook_b, [s for s, _ in seqs[1]])
        for j, p in enumerate(batch):
            n = len(p.idx_a)
            skip = max(0, min(n, done_rows - row))  # rows of this document already written
            row += n
            ia = torch.tensor(p.idx_a[skip:], dtype=torch.long)
            ib = torch.tensor(p.idx_b[skip:], dtype=torch.long)
            if ia.numel() == 0:
                continue
            off_a, off_b = seqs[0][j][1], seqs[1][j][1]
            buf["act_a"].append(acts_a[j][ia + off_a])
            buf["act_b"].append(acts_b[j][ib + off_b])
            buf["tok_a"].append(np.asarray(p.ids_a, dtype=np.int64)[ia.numpy()])
            buf["tok_b"].append(np.asarray(p.ids_b, dtype=np.int64)[ib.numpy()])
            buf["pos_a"].append(ia.numpy())
            buf["pos_b"].append(ib.numpy())
            buf["doc"].append(np.full(ia.numel(), p.doc.doc_id, dtype=np.int64))
            have += ia.numel()
        flush(False)

    try:
        for p in plans:
            if row + len(p.idx_a) <= done_rows:  # wholly written before an interruption: no forward pass
                row += len(p.idx_a)
                continue
            if not p.idx_a:
                continue
            pending.append(p)
            if len(pending) == cfg.batch_docs:
                run(pending)
                pending = []
        if pending:
            run(pending)
        flush(True)
    finally:
        bar.close()


def _mean_norm_scale(store: ActivationStore, max_tokens: int = 65_536) -> float:
    """The scalar that makes the mean activation norm sqrt(d_model) (docs/methods.md §13)."""
    norms = []
    seen = 0
    for batch in store.iter_batches(4096, shuffle=False, exclude_bos=False, drop_last=False):
        norms.append(batch.norm(dim=1))
        seen += batch.shape[0]
        if seen >= max_tokens:
            break
    mean = float(torch.cat(norms).mean())
    return math.sqrt(store.d_model) / mean if mean > 0 else 1.0


class PairedStore:
    """A finished paired store (see the module docstring): ``a`` / ``b`` activation stores and ``info``."""

    def __init__(self, path: Path, info: dict, a: ActivationStore, b: ActivationStore):
        self.path, self.info, self.a, self.b = path, info, a, b
        d_models, scales = info["d_models"], info["model_scales"]  # one entry per model: a, then b
        self.d_models: tuple[int, int] = (int(d_models[0]), int(d_models[1]))
        self.model_scales: tuple[float, float] = (float(scales[0]), float(scales[1]))
        self.models: tuple[str, str] = tuple(info["models"])
        self.hooks: tuple[str, str] = tuple(info["hooks"])
        self.balanced = "norm"
        self._languages = {int(d["doc_id"]): d.get("language") for d in info.get("documents", [])}
        self._kinds = {int(d["doc_id"]): d.get("kind") for d in info.get("documents", [])}

    @classmethod
    def open(cls, path: str | Path, verify: str = "size") -> "PairedStore":
        path = Path(path)
        info = read_tagged_json(path / "pair.json", format=PAIR_FORMAT, what="a paired activation store",
                                max_version=PAIR_FORMAT_VERSION,
                                fix="harvest it (again) with workbench.diffing.paired_store.harvest_pair")
        a, b = ActivationStore.open(path / "a", verify), ActivationStore.open(path / "b", verify)
        if a.n_tokens != b.n_tokens or a.n_shards != b.n_shards:
            raise ValueError(f"{path}: the two stores hold {a.n_tokens} and {b.n_tokens} rows; a paired store needs "
                             f"equal ones. Harvest again into a fresh folder")
        return cls(path, info, a, b)

    @property
    def n_tokens(self) -> int:
        return int(self.a.n_tokens)

    def alignment_fractions(self) -> dict:
        """``{"a": {language: fraction of model A's tokens kept}, "b": {...}}``."""
        return AlignmentStats.from_dict(self.info["alignment"]).fractions()

    def doc_ids(self) -> np.ndarray:
        return self.a.doc_ids().reshape(-1)

    def languages(self) -> np.ndarray:
        """The language of every row (``"?"`` when unknown)."""
        return np.array([self._languages.get(int(d)) or "?" for d in self.doc_ids()])

    def kinds(self) -> np.ndarray:
        """The document kind ("wiki", "chat") of every row."""
        return np.array([self._kinds.get(int(d)) or "?" for d in self.doc_ids()])

    def load(self, max_tokens: int | None = None, *, scaled: bool = True) -> Tensor:
        """All rows (or the first ``max_tokens``) as one float32 tensor ``[n, d_A + d_B]``, in store order, each
        model scaled to mean norm sqrt(d_model) when ``scaled``."""
        parts = []
        for store, scale in ((self.a, self.model_scales[0]), (self.b, self.model_scales[1])):
            x = torch.cat(list(store.iter_batches(4096, shuffle=False, exclude_bos=False, drop_last=False,
                                                  max_tokens=max_tokens)))
            parts.append(x * scale if scaled else x)
        return torch.cat(parts, dim=1)

    def balance(self, how: str = "norm", max_tokens: int = 65_536) -> tuple[float, float]:
        """Set (and return) the per-model scales the source and ``load(scaled=True)`` use. ``"norm"``: mean norm
        sqrt(d_model) (the crosscoder papers' recipe, stored at harvest). ``"variance"``: mean squared norm of the
        *centred* activations d_model, so each model's variance weighs the same in the loss; use it when one model's
        residual stream is dominated by a large constant direction (Gemma-3-270M: most of its norm), where the norm
        recipe leaves that model's token-to-token signal a tiny part of the loss (docs/methods.md §17)."""
        if how == "norm":
            self.model_scales = tuple(float(s) for s in self.info["model_scales"])  # type: ignore[assignment]
        elif how == "variance":
            variances = self.variances(max_tokens, scaled=False)
            self.model_scales = tuple(math.sqrt(d / v) if v > 0 else 1.0  # type: ignore[assignment]
                                      for d, v in zip(self.d_models, variances))
        else:
            raise ValueError(f"balance how={how!r}: use 'norm' or 'variance'")
        self.balanced = how
        return self.model_scales

    def variances(self, max_tokens: int = 65_536, *, scaled: bool = True) -> tuple[float, float]:
        """Each model's centred variance (mean squared norm about its mean), in the current scales (``scaled``) or
        raw: what :func:`~workbench.diffing.crosscoder.fvu_weights` turns into per-model loss weights, and what
        ``balance("variance")`` equalises."""
        x = self.load(max_tokens, scaled=scaled)
        d_a = self.d_models[0]
        return tuple(float((part - part.mean(0)).pow(2).sum(1).mean())  # type: ignore[return-value]
                     for part in (x[:, :d_a], x[:, d_a:]))

    def metadata(self) -> SAEMetadata:
        return SAEMetadata(model_name=" | ".join(self.models), hook_name=" | ".join(self.hooks), context_size=None,
                           prepend_bos=False, extra={"crosscoder": {
                               "models": list(self.models), "hooks": list(self.hooks), "d_models": list(self.d_models),
                               "model_scales": list(self.model_scales), "balance": self.balanced,
                               "paired_store": str(self.path)}})

    def source(self, *, holdout_tokens: int = 0, seed: int = 0, max_tokens: int | None = None) -> TensorSource:
        """A :class:`~workbench.sae.sources.TensorSource` of the scaled, concatenated rows for the SAE trainer
        (shuffled by ``seed``, the first ``holdout_tokens`` of that order held out)."""
        src = TensorSource(self.load(max_tokens), seed=seed, metadata=self.metadata(), holdout_tokens=holdout_tokens)
        describe = src.describe

        def described() -> dict:  # the trainer's run fingerprint names the paired store
            return {**describe(), "kind": "paired", "path": str(self.path), "models": list(self.models),
                    "hooks": list(self.hooks), "balance": self.balanced}

        src.describe = described  # type: ignore[method-assign]
        return src


def crosscoder_spec(paired: PairedStore, architecture: str = "batchtopk", d_sae: int = 4096, *, k: float = 32,
                    l1_coefficient: float | None = None, dedicated: bool = False, exclusive_fraction: float = 0.05,
                    weighting: str = "none", **kwargs):
    """A :class:`~workbench.diffing.crosscoder.CrosscoderSpec` for ``paired`` (widths filled in); ``dedicated``
    makes it a DFC with ``exclusive_fraction`` of the latents exclusive to each model. ``weighting="fvu"`` sets
    ``loss_weights`` so that each model's FVU counts the same in the loss (from :meth:`PairedStore.variances` in
    the store's current scales; ``"none"``: the papers' plain sum). Other keywords go to the spec
    (``exclusive_k``, ``lr``, ``name``...)."""
    from workbench.diffing.crosscoder import CrosscoderSpec, fvu_weights
    from workbench.diffing.dfc import Partition

    if weighting not in ("none", "fvu"):
        raise ValueError(f"weighting={weighting!r}: use 'none' (the papers' plain sum) or 'fvu'")
    if weighting == "fvu":
        kwargs["loss_weights"] = fvu_weights(paired.variances())
    part = Partition.from_fractions(d_sae, exclusive_fraction, exclusive_fraction) if dedicated else Partition(d_sae)
    return CrosscoderSpec(architecture, d_sae, k=k, l1_coefficient=l1_coefficient, d_models=paired.d_models,
                          a_only=part.a_only, b_only=part.b_only, **kwargs)
