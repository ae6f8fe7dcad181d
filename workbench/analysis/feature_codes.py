"""The feature pass's cache of sparse codes: one CSR safetensors file per store shard, so an interrupted or repeated
pass re-encodes only what is missing (:class:`SparseCodes`, filled by :func:`encode_sparse_codes`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.protocols import SAELike, StoreLike

if TYPE_CHECKING:
    from workbench.sae.model import SAE
from workbench.analysis.feature_results import FeatureConfig
from workbench.analysis.feature_kernels import SparseEncoder
from workbench.core.hardware import fast_bf16_matmul
from workbench.core.persist import atomic_write_text, load_tensors, save_tensors

__all__ = ["CODES_DIR", "CODES_FORMAT", "CODES_VERSION", "SparseCodes", "encode_sparse_codes"]

CODES_FORMAT = "workbench-sparse-codes"
CODES_VERSION = 1
CODES_DIR = "codes"


# ----------------------------------------------------------------------------------------------------------------
# The sparse-codes cache
# ----------------------------------------------------------------------------------------------------------------


class SparseCodes:
    """A directory of an SAE's sparse codes over a store, one CSR file per store shard.

    ``NNNNN.safetensors`` holds ``rowptr`` [n_tokens + 1] (int64, over every position of the shard's contexts),
    ``feat`` (int32) and ``val`` (float32), entries sorted by (token, feature); ``manifest.json`` names the SAE
    (fingerprint), the store, the hook and the settings the codes depend on.
    """

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.d_sae = int(manifest["d_sae"])
        self.context_size = int(manifest["context_size"])

    @classmethod
    def open_or_reset(cls, path: str | Path, manifest: dict) -> "SparseCodes":
        """Open the cache at ``path`` if it was written for ``manifest``; otherwise empty it and start anew."""
        path = Path(path)
        mpath = path / "manifest.json"
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                old = None
            if old != manifest:
                shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        if not mpath.exists():
            atomic_write_text(mpath, json.dumps(manifest, indent=1))
        return cls(path, manifest)

    def shard_path(self, shard: int) -> Path:
        return self.path / f"{shard:05d}.safetensors"

    def has_shard(self, shard: int, n_contexts: int) -> bool:
        p = self.shard_path(shard)
        if not p.is_file():
            return False
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                return int((f.metadata() or {}).get("n_contexts", -1)) == int(n_contexts)
        except Exception:
            return False

    def write_shard(self, shard: int, first_context: int, n_contexts: int, rows: Tensor, feat: Tensor, val: Tensor
                    ) -> None:
        n_tok = n_contexts * self.context_size
        counts = torch.bincount(rows.to("cpu"), minlength=n_tok) if rows.numel() else torch.zeros(n_tok, dtype=torch.long)
        rowptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
        save_tensors(
            {"rowptr": rowptr, "feat": feat.to("cpu", torch.int32), "val": val.to("cpu", torch.float32)},
            self.shard_path(shard),
            {"first_context": str(first_context), "n_contexts": str(n_contexts)},
        )

    def read_shard(self, shard: int) -> tuple[int, Tensor, Tensor, Tensor]:
        """(first_context, rowptr, feat int64, val) of one shard."""
        tensors, meta = load_tensors(self.shard_path(shard), "delete the codes folder and rerun the pass")
        try:
            return int(meta["first_context"]), tensors["rowptr"], tensors["feat"].to(torch.int64), tensors["val"]
        except KeyError as err:
            raise ValueError(f"{self.shard_path(shard)} lacks {err}: delete the codes folder and rerun") from None

    def entries(self, shard: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """(global token index, feature, value) of every entry of one shard."""
        first, rowptr, feat, val = self.read_shard(shard)
        counts = rowptr[1:] - rowptr[:-1]
        tok = torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int64), counts)
        tok += first * self.context_size
        return tok.to(device), feat.to(device), val.to(device)


def shard_layout(store: StoreLike, n_contexts: int) -> list[tuple[int, int, int]]:
    """(shard, first context, contexts to analyse) for the first ``n_contexts`` contexts of the store."""
    out, start = [], 0
    for s in range(store.n_shards):
        if start >= n_contexts:
            break
        n = int(store.shard_arrays(s)["tokens"].shape[0])
        out.append((s, start, min(n, n_contexts - start)))
        start += n
    return out


def use_fast_encoder(config: FeatureConfig, sae: SAELike, device: torch.device) -> bool:
    if getattr(sae.cfg, "architecture", None) != "topk":
        return False
    return config.encode_dtype == "bfloat16" or (config.encode_dtype == "auto" and fast_bf16_matmul(device))


def encode_sparse_codes(store: StoreLike, sae: SAE, codes: SparseCodes, layout: Sequence[tuple[int, int, int]],
                        hook: str,
                        config: FeatureConfig, device: torch.device) -> dict:
    """Encode every shard of ``layout`` the cache lacks; returns {"encoded_shards", "reused_shards"}."""
    ctx = int(store.context_size)
    chunk = max(ctx, (config.chunk_tokens // ctx) * ctx)
    skip_bos = bool(config.exclude_bos and store.prepend_bos)
    encoder = SparseEncoder(sae, config.threshold, use_fast_encoder(config, sae, device))
    todo = [(s, first, n) for s, first, n in layout if not codes.has_shard(s, n)]
    total = sum(n for _, _, n in todo) * ctx
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="encode", disable=not config.progress or not todo,
               dynamic_ncols=True)
    try:
        for s, first, n in todo:
            rows_l, feat_l, val_l = [], [], []
            offset = 0
            for x in store.iter_batches(chunk, hook=hook, shuffle=False, exclude_bos=False, drop_last=False,
                                        start_tokens=first * ctx, max_tokens=n * ctx, device=device,
                                        dtype=torch.float32):
                rows, feat, val = encoder(x)
                if skip_bos:
                    keep = (rows + offset) % ctx != 0
                    rows, feat, val = rows[keep], feat[keep], val[keep]
                if rows.numel() > config.max_l0 * x.shape[0]:
                    raise ValueError(
                        f"the SAE fires on {rows.numel() / x.shape[0]:.0f} features per token on average (more than "
                        f"max_l0={config.max_l0:g}): this pass expects sparse codes. Is the SAE trained, and is it "
                        f"the one for this hook? Raise FeatureConfig.max_l0 to analyse it anyway.")
                rows_l.append((rows + offset).to("cpu"))
                feat_l.append(feat.to("cpu", torch.int32))
                val_l.append(val.to("cpu"))
                offset += x.shape[0]
                bar.update(x.shape[0])
            if offset != n * ctx:
                raise ValueError(f"the store streamed {offset} rows for shard {s}, expected {n * ctx}: it is "
                                 f"inconsistent; harvest it again")
            codes.write_shard(s, first, n, torch.cat(rows_l), torch.cat(feat_l), torch.cat(val_l))
    finally:
        bar.close()
    return {"encoded_shards": len(todo), "reused_shards": len(layout) - len(todo)}
