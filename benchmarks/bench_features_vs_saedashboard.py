"""Our feature pass against SAEDashboard (``sae-dashboard``, the ``bench`` extra) on the same SAE, tokens and features.

    python benchmarks/bench_features_vs_saedashboard.py [--tokens 16384] [--features 256] [--d-sae 256]

Both see the same Gemma-3-270M contexts (wiki corpus, 128 tokens each), the same SAE (a seeded random TopK SAE on
the default hook with unit-norm decoder rows, saved in SAELens format and loaded back by SAELens for SAEDashboard;
its decoder-norm folding, which SAELens refuses for TopK SAEs, is then the identity and skipped) and the same first
``--features`` features. Timed, in one process, one after the other:

* ``saedashboard``: ``SaeVisRunner(SaeVisConfig(...)).run(encoder, model, tokens)`` producing its feature data
  (top activations, quantile groups, activation histograms, logit tables). It runs the model itself.
* ``ours_harvest``: ``workbench.data.harvest.harvest`` of the same tokens into a fresh store (the model forward).
* ``ours_pass``: ``workbench.analysis.features.compute_features`` with the model for logit effects (top examples,
  quantile buckets, exact histograms, logit effects) -- for *every* one of the ``--d-sae`` features, not only the
  selected ones.

``speedup_end_to_end`` = SAEDashboard seconds / (our harvest + our pass); ``speedup_pass`` = SAEDashboard seconds /
our pass (activations already stored, as after a harvest that other analyses share). Target >= 10x.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import make_sae  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--d-sae", type=int, default=256, help="SAE width (default: = --features, so both analyse every feature)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--minibatch-tokens", type=int, default=32, help="SAEDashboard contexts per forward")
    args = parser.parse_args()

    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.data.corpus import CorpusSpec
    from workbench.data.harvest import HarvestConfig, HarvestSpec, harvest
    from workbench.data.hooks import default_hook
    from workbench.data.models import load_model
    from workbench.sae.io import save_sae

    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result: dict = {"uptime_before": uptime(), "model": args.model, "tokens": args.tokens, "features": args.features,
                    "d_sae": args.d_sae, "k": args.k, "torch_threads": torch.get_num_threads()}
    model = load_model(args.model, device="cpu")
    hook = default_hook(model.cfg.n_layers)
    sae = make_sae(model.cfg.d_model, args.d_sae, args.k, hook)
    with torch.no_grad():  # unit-norm decoder rows, so SAEDashboard's W_dec-norm folding is the identity
        norms = sae.W_dec.norm(dim=1, keepdim=True)
        sae.W_dec.div_(norms)
        sae.W_enc.mul_(norms.t())

    with tempfile.TemporaryDirectory() as tmp:
        spec = HarvestSpec(model=args.model, n_tokens=args.tokens, corpus=CorpusSpec(source="wiki"), hooks=(hook,))
        t0 = time.perf_counter()
        store = harvest(spec, Path(tmp) / "store", model=model, config=HarvestConfig(progress=False))
        harvest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = compute_features(store, sae, Path(tmp) / "features", FeatureConfig(progress=False), model=model)
        pass_s = time.perf_counter() - t0
        result["ours"] = {"harvest_s": round(harvest_s, 1), "pass_s": round(pass_s, 1),
                          "features_analysed": int(sae.cfg.d_sae), "alive": int((res.count > 0).sum()),
                          "tokens": int(store.n_tokens)}
        tokens = torch.from_numpy(store.token_ids().astype("int64")).reshape(-1, store.context_size)

        try:
            with redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from sae_dashboard.sae_vis_data import SaeVisConfig
                from sae_dashboard.sae_vis_runner import SaeVisRunner
                from sae_lens import SAE as SaeLensSAE
        except ImportError as err:
            result["saedashboard"] = {"error": f"{err}: pip install -e '.[bench]' (see pyproject.toml)"}
        else:
            save_sae(sae, Path(tmp) / "sae")
            sl_sae = SaeLensSAE.load_from_disk(str(Path(tmp) / "sae"), device="cpu")
            # SAEDashboard folds decoder norms into the encoder first; SAELens refuses that for TopK SAEs (it could
            # change which latents win). With unit-norm rows (above) the fold changes nothing, so skip it.
            assert torch.allclose(sl_sae.W_dec.norm(dim=1), torch.ones(args.d_sae), atol=1e-5)
            sl_sae.fold_W_dec_norm = lambda: None
            cfg = SaeVisConfig(hook_point=hook, features=list(range(args.features)),
                               minibatch_size_features=args.features, minibatch_size_tokens=args.minibatch_tokens,
                               device="cpu", dtype="float32", verbose=False)
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    data = SaeVisRunner(cfg).run(encoder=sl_sae, model=model, tokens=tokens)
            except Exception as err:  # an incompatibility with this torch / transformers / TransformerLens
                result["saedashboard"] = {"error": f"{type(err).__name__}: {str(err)[:500]}",
                                          "seconds_until_error": round(time.perf_counter() - t0, 1)}
            else:
                theirs_s = time.perf_counter() - t0
                result["saedashboard"] = {"seconds": round(theirs_s, 1),
                                          "features_analysed": len(data.feature_data_dict)}
                result["speedup_pass"] = round(theirs_s / pass_s, 2)
                result["speedup_end_to_end"] = round(theirs_s / (harvest_s + pass_s), 2)
                result["target"] = 10.0
    result["uptime_after"] = uptime()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
