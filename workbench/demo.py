"""The main job behind ``make demo``: embedded model -> Wikipedia activations -> summary."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .corpus import CorpusSpec
from .harvest import HarvestSpec, harvest
from .models import DEFAULT_MODEL, load_model


def run_demo(out: str | Path = "runs/demo", n_tokens: int = 200_000, model_name: str = DEFAULT_MODEL) -> dict:
    """Harvest ``n_tokens`` of the embedded Wikipedia into ``out/store`` and print a summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model(model_name)
    load_s = time.perf_counter() - t0
    spec = HarvestSpec(model=model_name, n_tokens=n_tokens, corpus=CorpusSpec(source="wiki"))
    store = harvest(spec, out / "store", model=model)
    summary = {
        "model": model_name,
        "model_load_s": round(load_s, 1),
        "store": str(store.path),
        "hook": store.hooks[0],
        "n_tokens": store.n_tokens,
        "harvest_tokens_per_s": store.manifest.get("extra", {}).get("tokens_per_second"),
        "store_size_mb": round(store.summary()["size_bytes"] / 2**20, 1),
        "activation_norms": store.norm_stats(max_tokens=50_000),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n== workbench demo: harvest summary ==")
    print(json.dumps(summary, indent=1))
    return summary
