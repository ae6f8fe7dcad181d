"""Export the feature pass's cached sparse codes in the layout of delphi's latent cache (EleutherAI's auto-interp
library), so delphi's explainers and scorers run on a workbench SAE without re-encoding anything.

    from workbench.report.delphi import export_delphi
    export_delphi("runs/x/features", "runs/x/delphi/latents", n_splits=5)

The layout, as delphi's ``LatentCache.save_splits`` writes it and its ``LatentDataset`` reads it::

    <out>/<hookpoint>/<start>_<end>.safetensors   one file per latent range [start, end] (end inclusive)
        locations    [n, 3] uint16 (uint32 when a value does not fit): (context, position, latent - start)
        activations  [n] float16, the latent's activation there (non-zero entries only)
        tokens       [n_contexts, context_size] int64, the token ids of the cached contexts (in every file)
    <out>/<hookpoint>/config.json                 delphi's cache settings plus ``model_name``

Our codes (:class:`workbench.analysis.feature_codes.SparseCodes`, CSR per store shard) become those coordinates:
the global token index t of an entry is context t // context_size, position t % context_size. BOS positions the
pass left out stay absent, as delphi's own cache omits near-zero entries.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from workbench.core.protocols import StoreLike
from workbench.core.errors import ConfigError, InputError
from workbench.core.persist import atomic_write_text

__all__ = ["DELPHI_LAYOUT", "export_delphi", "latent_ranges"]

DELPHI_LAYOUT = "delphi-latent-cache"


def latent_ranges(d_sae: int, n_splits: int) -> list[tuple[int, int]]:
    """delphi's split of ``d_sae`` latents into ``n_splits`` ranges ``(start, end)``, end inclusive."""
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or not 1 <= n_splits <= d_sae:
        raise ConfigError(f"n_splits={n_splits!r} must be a whole number in [1, d_sae={d_sae}]", param="n_splits")
    edges = torch.linspace(0, d_sae, steps=n_splits + 1).long().tolist()
    return [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:])]


def _codes(features_dir: Path):
    from workbench.analysis.feature_codes import CODES_DIR, SparseCodes

    path = features_dir / CODES_DIR
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path} holds no readable sparse-codes cache ({type(err).__name__})",
                         fix="run the feature pass with an out_dir (workbench features STORE --sae DIR --out "
                             "FOLDER) and export that folder") from None
    return SparseCodes(path, manifest)


def export_delphi(features_dir: str | Path, out_dir: str | Path, *, n_splits: int = 5, store: StoreLike | None = None,
                  model_name: str | None = None) -> Path:
    """Write the cached codes of the feature pass in ``features_dir`` as delphi's latent cache under ``out_dir``
    (module docstring); returns ``out_dir``. ``store`` defaults to the store the codes name."""
    from safetensors.numpy import save_file

    from workbench.data.store import ActivationStore

    features_dir, out = Path(features_dir), Path(out_dir)
    codes = _codes(features_dir)
    ident = codes.manifest.get("store") or {}
    store = store if store is not None else ActivationStore.open(ident.get("path", ""))
    hook, ctx = str(ident.get("hook") or store.hooks[0]), codes.context_size
    shards = sorted(int(p.stem) for p in codes.path.glob("[0-9]*.safetensors"))
    if not shards:
        raise InputError(f"{codes.path} holds no encoded shards", fix="rerun the feature pass to fill it")
    tok_l, feat_l, val_l, n_ctx = [], [], [], 0
    for s in shards:
        first, rowptr, feat, val = codes.read_shard(s)
        counts = rowptr[1:] - rowptr[:-1]
        tok_l.append(torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int64), counts) + first * ctx)
        feat_l.append(feat)
        val_l.append(val)
        n_ctx = max(n_ctx, first + counts.numel() // ctx)
    tok, feat, val = torch.cat(tok_l), torch.cat(feat_l), torch.cat(val_l)
    tokens = np.ascontiguousarray(store.token_ids()[:n_ctx].astype(np.int64))
    locations = torch.stack([tok // ctx, tok % ctx, feat], dim=1)
    folder = out / hook
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.safetensors"):
        old.unlink()
    per_split = []
    for start, end in latent_ranges(codes.d_sae, n_splits):
        keep = (feat >= start) & (feat <= end)
        loc = locations[keep].numpy().copy()
        loc[:, 2] -= start
        small = loc.size == 0 or int(loc.max()) < 2 ** 16
        data = {"locations": loc.astype(np.uint16 if small else np.uint32),
                "activations": val[keep].to(torch.float16).numpy(), "tokens": tokens}
        save_file(data, str(folder / f"{start}_{end}.safetensors"))
        per_split.append(int(keep.sum()))
    config = {"dataset_repo": str(model_name or store.model_name or ""), "dataset_split": "workbench-store",
              "dataset_name": str(store.path), "dataset_column": "text", "batch_size": 32, "cache_ctx_len": ctx,
              "n_tokens": int(n_ctx * ctx), "n_splits": int(n_splits),
              "model_name": str(model_name or store.model_name or "")}
    atomic_write_text(folder / "config.json", json.dumps(config, indent=1))
    atomic_write_text(out / "export.json", json.dumps(
        {"layout": DELPHI_LAYOUT, "hookpoint": hook, "d_sae": codes.d_sae, "n_contexts": n_ctx, "context_size": ctx,
         "n_entries": int(feat.numel()), "entries_per_split": per_split, "features_dir": str(features_dir)}, indent=1))
    return out
