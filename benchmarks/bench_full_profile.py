"""What the whole-corpus profile holds and what each of its steps cost.

Prints one JSON object:
* ``corpus``: documents, characters and Gemma tokens per language, train and held-out splits of the embedded wiki;
* ``steps_s``: seconds per step of the last ``make full`` (read from its ``summary.json``), with the load average
  at the time of reading (the run's own load is not recorded: say it when you report);
* ``per_token_us``: microseconds per token of harvesting (one forward to the hook) and of training (all epochs),
  and their ratio: the baseline is the harvest, the step every SAE study pays for first.

    python benchmarks/bench_full_profile.py [--summary runs/full/summary.json]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from workbench.data.corpus import CorpusSpec, corpus_stats
from workbench.data.models import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", default="runs/full/summary.json")
    ap.add_argument("--model", default="gemma-3-270m")
    args = ap.parse_args()
    tok = load_tokenizer(args.model)
    out: dict = {"corpus": {split: corpus_stats(CorpusSpec(source="wiki", split=split), tok)["languages"]
                            for split in ("train", "heldout")},
                 "load_average_now": os.getloadavg()}
    path = Path(args.summary)
    if path.is_file():
        s = json.loads(path.read_text())
        times = s.get("times_s", {})
        out["steps_s"] = times
        tokens = s.get("store_tokens")
        run = next(iter((s.get("training") or {}).values()), {})
        out["store_tokens"] = tokens
        out["sae_metrics"] = s.get("sae_metrics")
        out["scorecard"] = s.get("scorecard")
        epochs = s.get("epochs") or run.get("epochs")
        if tokens and times.get("harvest") and times.get("train"):
            harvest_us = 1e6 * times["harvest"] / tokens
            train_tokens = s.get("training_tokens") or tokens * (epochs or 1)
            train_us = 1e6 * times["train"] / train_tokens
            out["per_token_us"] = {"harvest": round(harvest_us, 1), "train": round(train_us, 2),
                                   "harvest_over_train": round(harvest_us / train_us, 1)}
    else:
        out["steps_s"] = None
        out["note"] = f"{path} not found: run `make full` first for the step costs"
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
