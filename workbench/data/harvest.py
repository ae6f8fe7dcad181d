"""Harvest activations: run the model over packed corpus contexts and write them to an activation store.

One forward pass fills every requested hook, and ``stop_at_layer`` skips the blocks above the deepest
hook. Shards are written by a background thread while the next shard is computed. A harvest resumes
from its last complete shard (shards scale with the harvest, so a small one checkpoints too; SIGINT / SIGTERM
write the finished shards and raise :class:`workbench.core.signals.Interrupted`), and ``harvest_cached`` keys
finished stores by their spec under ``WORKBENCH_HOME/stores`` so notebooks, tests and the demo share them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.core.protocols import ModelLike
from workbench.core.errors import ConfigError
from workbench.data.corpus import CorpusSpec, PackedBatch, packed_contexts
from workbench.core.home import cache_dir
from workbench.core.signals import StopSignals
from workbench.data.forward import hook_forward
from workbench.data.hooks import stop_layer, validate_hooks
from workbench.data.models import DEFAULT_MODEL, load_model
from workbench.data.provenance import check_model_matches, model_identity, weights_source
from workbench.core.processes import barrier, process_group
from workbench.data.store import ActivationStore, StoreError, StoreWriter
from workbench.data.store_ranks import merge_rank_stores, rank_store_dir, shards_of_rank

HARVEST_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HarvestSpec:
    """Everything that determines the contents of a store; its ``key()`` names the cached store."""

    model: str = DEFAULT_MODEL
    hooks: tuple[str, ...] = ()  # empty: the model's middle-layer residual stream
    n_tokens: int = 100_000
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    context_size: int = 128
    dtype: str = "bfloat16"  # Gemma's residual stream exceeds float16's range (values near 9e4)
    prepend_bos: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.n_tokens, int) or self.n_tokens <= 0:
            raise ConfigError(f"n_tokens must be a positive integer, got {self.n_tokens!r}", param="n_tokens")
        if self.context_size < 2:
            raise ConfigError(f"context_size must be at least 2, got {self.context_size}", param="context_size")
        if self.dtype not in ("float16", "bfloat16"):
            raise ConfigError(f"dtype must be 'float16' or 'bfloat16', got {self.dtype!r}", param="dtype")
        if isinstance(self.hooks, str):
            object.__setattr__(self, "hooks", (self.hooks,))
        object.__setattr__(self, "hooks", tuple(self.hooks))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["corpus"] = self.corpus.to_dict()
        d["hooks"] = list(self.hooks)
        return d

    def matches(self, stored: dict | None) -> bool:
        """Whether ``stored`` (a ``to_dict()`` from a store's manifest, perhaps written before a field existed)
        describes this spec: fields it lacks take their defaults."""
        if not isinstance(stored, dict):
            return False
        try:
            corpus = CorpusSpec.from_dict(stored.get("corpus") or {})
        except (TypeError, ValueError):
            return False
        return {**self.to_dict(), **stored, "corpus": corpus.to_dict()} == self.to_dict()

    def key(self) -> str:
        """Stable hash of the spec (the corpus by its content fingerprint)."""
        d = self.to_dict()
        d["corpus"] = self.corpus.fingerprint()
        d["version"] = HARVEST_FORMAT_VERSION
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class HarvestConfig:
    """How to run a harvest (does not change the store's contents)."""

    # contexts per forward pass; None: 32 (x 128 = 4096 tokens) on a CPU or MPS, 256 on CUDA, where 32 leaves the GPU
    # waiting on the host (measured on an H200: 72.5k vs 220k tokens/s, docs/methods.md §26). Shards and packing
    # count in units of 32 either way, so the default store layout is the same on every device.
    batch_contexts: int | None = None
    shard_contexts: int | None = None  # the unit a killed harvest resumes from; None: see resolve_shard_contexts
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        b = self.batch_contexts
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ConfigError(f"batch_contexts={self.batch_contexts!r} must be a whole number >= 1, e.g. 32",
                              param="batch_contexts")
        if self.shard_contexts is not None and (not isinstance(self.shard_contexts, int) or self.shard_contexts < 1):
            raise ConfigError(f"shard_contexts={self.shard_contexts!r} must be a whole number >= 1, or None for the "
                              f"default", param="shard_contexts")

    @property
    def unit_contexts(self) -> int:
        """The packing and shard unit: ``batch_contexts``, or 32 when it is left to the device."""
        return DEFAULT_BATCH_CONTEXTS if self.batch_contexts is None else int(self.batch_contexts)

    def forward_contexts(self, device: torch.device | str) -> int:
        """Contexts per forward pass on ``device``: ``batch_contexts``, else 256 on CUDA and 32 elsewhere."""
        if self.batch_contexts is not None:
            return int(self.batch_contexts)
        return CUDA_BATCH_CONTEXTS if torch.device(device).type == "cuda" else DEFAULT_BATCH_CONTEXTS


DEFAULT_BATCH_CONTEXTS = 32
CUDA_BATCH_CONTEXTS = 256


MAX_SHARD_CONTEXTS = 512


def default_shard_contexts(batch_contexts: int, n_contexts: int) -> int:
    """About a sixteenth of the harvest, in whole forward batches, at least one batch and at most 512 contexts,
    so a small harvest checkpoints too."""
    b = int(batch_contexts)
    sixteenth = -(-n_contexts // 16)
    per = -(-sixteenth // b) * b  # rounded up to whole batches
    return max(b, min(MAX_SHARD_CONTEXTS, per))


def resolve_shard_contexts(config: HarvestConfig, n_contexts: int, out: Path) -> int:
    """Contexts per shard: ``config.shard_contexts`` if set; else the shard size of a partial store already in
    ``out`` (so it resumes); else :func:`default_shard_contexts`."""
    if config.shard_contexts is not None:
        return int(config.shard_contexts)
    try:
        existing = json.loads((out / "manifest.json").read_text()).get("shard_contexts")
        if isinstance(existing, int) and existing > 0:
            return existing
    except (OSError, ValueError, AttributeError):
        pass
    return default_shard_contexts(config.unit_contexts, n_contexts)


def _shards(batches: Iterator[PackedBatch], shard_contexts: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Re-cut packed batches into shards of exactly ``shard_contexts`` contexts (last may be short)."""
    buf: list[tuple[np.ndarray, ...]] = []
    have = 0
    for b in batches:
        buf.append((b.tokens, b.doc_ids, b.positions))
        have += len(b)
        while have >= shard_contexts:
            cat = [np.concatenate([x[i] for x in buf]) for i in range(3)]
            yield tuple(a[:shard_contexts] for a in cat)
            rest = tuple(a[shard_contexts:] for a in cat)
            buf, have = ([rest] if len(rest[0]) else []), len(rest[0])
    if have:
        yield tuple(np.concatenate([x[i] for x in buf]) for i in range(3))


def _forward_acts(model: ModelLike, tokens: np.ndarray, hooks: list[str], stop: int | None, batch: int, device,
                  forward=None) -> dict:
    """Run the model over ``tokens`` [n, ctx] in minibatches; return {hook: [n, ctx, d] float tensor}.

    ``forward`` (a ``workbench.data.forward.HookForward`` for ``hooks``) runs the fastest exact path; without it,
    ``HookedTransformer.run_with_hooks``."""
    if forward is not None:
        parts = [forward(torch.from_numpy(tokens[i : i + batch].astype(np.int64)).to(device))
                 for i in range(0, len(tokens), batch)]
        return {h: torch.cat([p[h].to("cpu") for p in parts]) for h in hooks}
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    grabbed: dict[str, torch.Tensor] = {}

    def grab(act, hook):
        grabbed[hook.name] = act.detach()
        return act

    fwd_hooks = [(h, grab) for h in hooks]
    with torch.inference_mode():
        for i in range(0, len(tokens), batch):
            toks = torch.from_numpy(tokens[i : i + batch].astype(np.int64)).to(device)
            model.run_with_hooks(toks, fwd_hooks=fwd_hooks, stop_at_layer=stop, return_type=None)
            for h in hooks:
                out[h].append(grabbed[h].to("cpu"))
    return {h: torch.cat(v) for h, v in out.items()}


class _ShardWriterThread:
    """Writes shards in the background so disk I/O and hashing overlap the next forward pass."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_shard(*item[0], **item[1])
                except BaseException as err:  # surfaced in put()/close()
                    self.error = err

    def put(self, *args, **kwargs) -> None:
        if self.error:
            raise self.error
        self.q.put((args, kwargs))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def harvest(
    spec: HarvestSpec,
    out: str | Path,
    model: ModelLike | None=None,
    config: HarvestConfig | None = None,
) -> ActivationStore:
    """Harvest ``spec`` into the directory ``out``, resuming a partial store there.

    Returns the finished, opened store. ``model`` may be passed to reuse a loaded one; it must be the model
    ``spec.model`` names (a ConfigError naming both otherwise), since the store is labelled with ``spec.model``.
    """
    config = config or HarvestConfig()
    out = Path(out)
    if model is not None:
        check_model_matches(model, spec.model)
    if (out / "manifest.json").exists():
        try:
            store = ActivationStore.open(out)
        except StoreError:
            store = None  # partial or damaged: the writer below resumes or explains
        if store is not None:
            if spec.matches(store.manifest.get("extra", {}).get("harvest_spec")):
                if config.shard_contexts is not None and store.shard_contexts != config.shard_contexts:
                    raise ConfigError(
                        f"{out} already holds this harvest with shard_contexts={store.shard_contexts}, not the "
                        f"{config.shard_contexts} asked for (the shard layout orders a shuffled training stream)",
                        fix="pass shard_contexts=None to use it, or choose another output directory",
                        param="shard_contexts")
                return store
            raise ConfigError(
                f"{out} already holds a finished store from a different harvest "
                f"({store.manifest.get('extra', {}).get('harvest_spec')}). Choose another output directory, "
                "or delete this one to harvest again."
            )
    if model is None:
        model = load_model(spec.model, device=config.device)
    device = next(model.parameters()).device
    hooks = validate_hooks(model, list(spec.hooks))
    stop = stop_layer(model, hooks)
    forward = hook_forward(model, hooks)  # HF modules under TL hook names when exact (docs/methods.md §19)
    tokenizer = model.tokenizer
    d_model = {h: _hook_width(model, h) for h in hooks}
    n_contexts = -(-spec.n_tokens // spec.context_size)

    contexts = packed_contexts(
        spec.corpus, tokenizer, n_contexts * spec.context_size, spec.context_size, spec.prepend_bos,
        batch_contexts=config.unit_contexts,
    )
    shard_contexts = resolve_shard_contexts(config, n_contexts, out)
    shards = _shards(contexts, shard_contexts)
    first = next(shards)  # an empty or unreadable corpus fails here, before anything is written
    # under torchrun each rank harvests every world_size-th shard into its own store, merged at the end
    rank, world = process_group()
    n_shards = -(-n_contexts // shard_contexts)
    mine = set(shards_of_rank(n_shards, rank, world))
    target = out if world == 1 else rank_store_dir(out, rank, world)
    store_args: dict[str, Any] = dict(
        model_name=spec.model,
        hooks=hooks,
        d_model=d_model,
        context_size=spec.context_size,
        dtype=spec.dtype,
        shard_contexts=shard_contexts,
        corpus=spec.corpus.to_dict(),
        corpus_fingerprint=spec.corpus.fingerprint(),
    )

    provenance = {"model_identity": model_identity(model), **weights_source(spec.model)}
    writer = StoreWriter(target, **store_args,
                         extra={"harvest_spec": spec.to_dict(), "prepend_bos": spec.prepend_bos, **provenance})
    b = config.forward_contexts(device)
    # SIGINT / SIGTERM: the shard being computed is abandoned, the finished ones are written, then Interrupted
    with StopSignals(what=f"harvest into {out}") as signals:
        try:
            done = writer.n_complete_shards  # of this rank's shards (all of them in one process)
            bar = tqdm(total=n_contexts * spec.context_size, unit="tok", desc="harvest",
                       disable=not config.progress or rank != 0,
                       initial=min(done * world * shard_contexts, n_contexts) * spec.context_size, dynamic_ncols=True)
            background = _ShardWriterThread(writer)
            t0, fresh_tokens = time.perf_counter(), 0
            try:
                for index, (tokens, doc_ids, positions) in enumerate(itertools.chain([first], shards)):
                    if index not in mine or index // world < done:
                        continue
                    parts = []  # one forward batch at a time, so the bar moves and a signal is seen per batch
                    for lo in range(0, len(tokens), b):
                        if signals.requested:
                            break
                        parts.append(_forward_acts(model, tokens[lo:lo + b], hooks, stop, b, device, forward=forward))
                        bar.update(tokens[lo:lo + b].size * world)
                    if signals.requested:
                        break
                    acts = {h: torch.cat([part[h] for part in parts]) for h in hooks}
                    background.put(index // world, tokens, doc_ids, positions, acts)
                    fresh_tokens += tokens.size
            finally:
                try:
                    background.close()
                finally:
                    bar.close()
        except BaseException:
            writer.close()  # release the store's lock so a retry in this process can resume
            raise
        if signals.requested:
            writer.close()
            kept = writer.n_complete_shards
            raise signals.interrupted(
                f"harvest stopped with {kept} of {-(-n_contexts // shard_contexts)} shards "
                f"({min(kept * shard_contexts, n_contexts) * spec.context_size} tokens) saved in {out}")
    elapsed = time.perf_counter() - t0
    extra = {
        "harvest_spec": spec.to_dict(),
        "prepend_bos": spec.prepend_bos,
        "tokens_per_second": fresh_tokens / elapsed if elapsed > 0 and fresh_tokens else None,
        "device": str(device),
        "forward": forward.path,
        **provenance,
    }
    if world == 1:
        return writer.finalize(extra=extra)
    writer.close()  # this rank's shards are on disk; rank 0 moves them all into ``out``
    barrier()
    if rank == 0:
        final = StoreWriter(out, **store_args, extra={"harvest_spec": spec.to_dict(), "prepend_bos": spec.prepend_bos,
                                                      **provenance})
        try:
            merge_rank_stores(final, world, n_shards)
            final.finalize(extra={**extra, "processes": world, "tokens_per_second": None})
        finally:
            final.close()
    barrier()
    return ActivationStore.open(out)


_D_MODEL_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
_D_MLP_POINTS = ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post")


def _hook_width(model: ModelLike, hook: str) -> int:
    """The last dimension of a hook's activation: from the config for the per-token block hooks whose width it
    fixes (d_model, or d_mlp inside the MLP), else found by a one-token forward (which also rejects hooks that are
    not one vector per token)."""
    point = hook.split(".", 2)[2] if hook.startswith("blocks.") and hook.count(".") >= 2 else ""
    if point in _D_MODEL_POINTS:
        return int(model.cfg.d_model)
    if point in _D_MLP_POINTS and model.cfg.d_mlp:
        return int(model.cfg.d_mlp)
    seen = {}

    def grab(act, hook):
        seen["shape"] = tuple(act.shape)
        return act

    toks = torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    with torch.inference_mode():
        model.run_with_hooks(toks, fwd_hooks=[(hook, grab)], stop_at_layer=stop_layer(model, [hook]), return_type=None)
    if len(seen["shape"]) != 3:
        raise ConfigError(
            f"Hook '{hook}' gives activations of shape {list(seen['shape'])}, not one vector per token "
            "([batch, pos, d]). Harvest a per-token hook: hook_resid_pre/mid/post, hook_attn_out, hook_mlp_out, "
            "mlp.hook_post, or attn.hook_z's per-token equivalent hook_attn_out."
        )
    return int(seen["shape"][-1])


def cache_layout(spec: HarvestSpec, config: HarvestConfig | None = None) -> int:
    """Contexts per shard of the store ``harvest_cached(spec, config=config)`` returns: ``config.shard_contexts``,
    else :func:`default_shard_contexts` for ``config.unit_contexts``."""
    config = config or HarvestConfig()
    n_contexts = -(-spec.n_tokens // spec.context_size)
    return int(config.shard_contexts or default_shard_contexts(config.unit_contexts, n_contexts))


def store_dir(spec: HarvestSpec, shard_contexts: int | None = None) -> Path:
    """Where ``harvest_cached`` keeps the store for ``spec`` with ``shard_contexts`` contexts per shard (None: the
    default layout). The layout is part of the name because a shuffled training stream follows the shards: two
    callers asking for different layouts get two stores, never one another's. The default layout keeps the plain
    ``<model>-<key>`` name, so stores cached before the layout was in the name are found again."""
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.model)[-40:]
    base = cache_dir("stores") / f"{safe_model}-{spec.key()}"
    if shard_contexts is None or int(shard_contexts) == cache_layout(spec):
        return base
    return base.with_name(f"{base.name}-s{int(shard_contexts)}")


def _refile_legacy(spec: HarvestSpec) -> None:
    """A finished store cached under the plain name before the layout was in the name may have another layout than
    the default: move it to the name of its own layout (if free), so it is neither returned for the default layout
    nor harvested again for its own."""
    plain = store_dir(spec)
    try:
        manifest = json.loads((plain / "manifest.json").read_text())
        held = int(manifest["shard_contexts"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    home = store_dir(spec, held)
    if not manifest.get("complete") or home == plain:
        return
    try:
        if not home.exists():
            plain.rename(home)
        elif json.loads((home / "manifest.json").read_text()).get("complete"):
            import shutil

            shutil.rmtree(plain)  # a duplicate of the finished store under its own name
    except (OSError, ValueError):  # another process moved it first, or the other copy is unreadable: leave both
        pass


def harvest_cached(spec: HarvestSpec, model: ModelLike | None=None,
                   config: HarvestConfig | None = None) -> ActivationStore:
    """The store for ``spec`` in the shard layout ``config`` asks for (:func:`cache_layout`), harvested once and
    reused afterwards.

    Safe when several processes ask at once: the first harvests under a file lock, the others wait and
    then open the finished store.
    """
    from contextlib import nullcontext

    from filelock import FileLock

    if model is not None:
        check_model_matches(model, spec.model)  # before anything is cached under spec.model's key
    layout = cache_layout(spec, config)
    target = store_dir(spec, layout)
    config = dataclasses_replace(config or HarvestConfig(), shard_contexts=layout)
    rank, world = process_group()
    # under torchrun the ranks harvest together (barriers inside harvest): only rank 0 takes the lock
    with FileLock(str(target) + ".lock") if rank == 0 else nullcontext():
        if world == 1:
            _refile_legacy(spec)
        try:
            store = ActivationStore.open(target)
            if store.manifest.get("complete") and store.shard_contexts == layout:
                return store
        except StoreError:
            pass
        return harvest(spec, target, model=model, config=config)
