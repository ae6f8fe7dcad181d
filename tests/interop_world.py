"""A tiny offline world for the SAELens interop checks (tests/test_interop.py and benchmarks/bench_interop.py).

A character-level tokenizer, a random 2-layer ``HookedSAETransformer`` (d_model 16), a real activation store of its
residual stream, SAELens SAEs of every v6 architecture built by SAELens itself (random weights, or trained for a few
steps by SAELens's own trainer on the store), and :func:`entry_point_results`: what each public entry point
(features, search, steering, evaluation, two widgets) returns for one SAE, as tensors to compare.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from helpers import write_store

HOOK = "blocks.0.hook_resid_post"
D_MODEL, D_SAE, K = 16, 32, 4
CHARS = "abcdefghijklmnopqrstuvwxyz .,"
TEXTS = ["the cat sat on the mat.", "a dog ran in the park, fast.", "birds sing in the morning.",
         "the sea is blue and deep.", "we read a book at night.", "snow falls on the hills.",
         "the sun rose over the town.", "fish swim in the cold river."]
PROMPT = "the cat"
ARCHITECTURES = ("standard", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk", "gated")


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<pad>", pad_token="<pad>",
                                   unk_token="<unk>", add_bos_token=True, name_or_path="tiny-chars")


def tiny_model():
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    tok = tiny_tokenizer()
    cfg = HookedTransformerConfig(n_layers=2, d_model=D_MODEL, d_head=4, n_heads=4, n_ctx=64, d_vocab=len(tok),
                                  act_fn="gelu", normalization_type="LN", seed=0)
    model = HookedSAETransformer(cfg, tokenizer=tok, default_padding_side="right")
    model.eval()
    return model


def context_tokens(model, ctx: int = 16) -> torch.Tensor:
    """[n_texts, ctx] token ids, BOS first, each text cut or padded (with spaces) to ``ctx``."""
    rows = []
    for text in TEXTS:
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][: ctx - 1]
        ids = ids + [model.tokenizer.convert_tokens_to_ids(" ")] * (ctx - 1 - len(ids))
        rows.append([model.tokenizer.bos_token_id] + ids)
    return torch.tensor(rows)


def tiny_store(model, path: Path):
    """A real activation store of ``HOOK`` over :data:`TEXTS` (one context each)."""
    from workbench.data.store import ActivationStore

    tokens = context_tokens(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    acts = cache[HOOK].float().numpy()
    write_store(path, acts, tokens.numpy().astype(np.int32), shard_contexts=4, hook=HOOK)
    return ActivationStore.open(path)


# ---------------------------------------------------------------------------------------------------------------
# SAELens SAEs, built by SAELens
# ---------------------------------------------------------------------------------------------------------------


def _meta():
    from sae_lens.saes.sae import SAEMetadata

    return SAEMetadata(model_name="tiny-chars", hook_name=HOOK, context_size=16, prepend_bos=True)


def sae_lens_random(arch: str, sample: torch.Tensor, seed: int = 0):
    """A SAELens SAE of ``arch`` with random weights (biases and thresholds set from ``sample`` [n, d_model] so
    that every architecture's codes are neither empty nor dense)."""
    import sae_lens as sl

    torch.manual_seed(seed)
    common = dict(d_in=D_MODEL, d_sae=D_SAE, metadata=_meta())
    build = {
        "standard": lambda: sl.StandardSAE(sl.StandardSAEConfig(**common)),
        "topk": lambda: sl.TopKSAE(sl.TopKSAEConfig(k=K, **common)),
        "jumprelu": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**common)),
        "batchtopk": lambda: sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(k=K, **common)),
        "matryoshka_batchtopk": lambda: sl.MatryoshkaBatchTopKTrainingSAE(sl.MatryoshkaBatchTopKTrainingSAEConfig(
            k=K, matryoshka_widths=[8, 16, D_SAE], **common)),
        "gated": lambda: sl.GatedSAE(sl.GatedSAEConfig(**common)),
    }[arch]
    sae = build()
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1) + 0.5)  # decoder norms not 1: exercises the folding
        sae.b_dec.copy_(sample.mean(0))
        if arch == "gated":
            sae.r_mag.normal_(std=0.2)
            sae.b_mag.normal_(std=0.1)
            sae.b_gate.normal_(std=0.1)
        else:
            sae.b_enc.normal_(std=0.1)
        pre = (sample - sae.b_dec) @ sae.W_enc + (sae.b_gate if arch == "gated" else sae.b_enc)
        if arch == "jumprelu":
            sae.threshold.copy_(pre.clamp_min(0).quantile(0.8, dim=0))
        if arch in ("batchtopk", "matryoshka_batchtopk"):
            scaled = pre * sae.W_dec.norm(dim=1)  # rescale_acts_by_decoder_norm: thresholds in these units
            sae.topk_threshold.fill_(float(scaled.topk(K, dim=1).values[:, -1].mean()))
    return sae.eval()


def sae_lens_from_our_folder(sample: torch.Tensor, folder: Path):
    """A workbench topk SAE saved by the workbench and opened by ``sae_lens.SAE.load_from_disk``; and the SAE."""
    from sae_lens import SAE as LensSAE

    from workbench.sae.io import save_sae
    from workbench.sae.model import SAE, SAEConfig, SAEMetadata

    ours = SAE(SAEConfig("topk", D_MODEL, D_SAE, k=K), SAEMetadata(model_name="tiny-chars", hook_name=HOOK,
                                                                     context_size=16), seed=3)
    with torch.no_grad():
        ours.b_dec.copy_(sample.mean(0))
        ours.b_enc.normal_(std=0.1, generator=torch.Generator().manual_seed(4))
    save_sae(ours.eval(), folder)
    return LensSAE.load_from_disk(str(folder)), ours


def sae_lens_trained(store, steps: int = 8, batch: int = 32):
    """A SAELens BatchTopK SAE trained for ``steps`` steps by SAELens's own ``SAETrainer`` on our store's hook."""
    import sae_lens as sl
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    sae = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_MODEL, d_sae=D_SAE, k=K, metadata=_meta()))

    def batches():
        while True:
            yield from store.iter_batches(batch, hook=HOOK, shuffle=True, exclude_bos=True, drop_last=True, seed=0)

    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=3e-3, lr_end=3e-3,
        lr_scheduler_name="constant", lr_warm_up_steps=0, lr_decay_steps=0, adam_beta1=0.9, adam_beta2=0.999,
        device="cpu", autocast=False, dead_feature_window=100, feature_sampling_window=1000, n_checkpoints=0,
        checkpoint_path=None, save_final_checkpoint=False, logger=sl.LoggingConfig(log_to_wandb=False))
    SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches()).fit()
    return sae.eval()


def converted(sl_sae):
    """The workbench SAE for a SAELens one by the *file* route: SAELens saves it (training classes: as its own
    inference model), the workbench loads the folder. Independent of :func:`workbench.sae.as_sae`'s in-memory path."""
    from workbench.sae.io import load_sae

    with tempfile.TemporaryDirectory() as tmp:
        if hasattr(sl_sae, "save_inference_model"):
            sl_sae.save_inference_model(tmp)
        else:
            sl_sae.save_model(tmp)
        return load_sae(tmp).eval()


def sae_lens_inference(sl_sae):
    """SAELens's own inference object for ``sl_sae`` (training classes: their saved inference model, as SAELens
    itself would serve them), for the reference codes."""
    from sae_lens import SAE as LensSAE

    if not hasattr(sl_sae, "save_inference_model"):
        return sl_sae
    with tempfile.TemporaryDirectory() as tmp:
        sl_sae.save_inference_model(tmp)
        return LensSAE.load_from_disk(tmp)


# ---------------------------------------------------------------------------------------------------------------
# What every entry point returns for one SAE
# ---------------------------------------------------------------------------------------------------------------


def entry_point_results(model, store, sae, feature: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per entry point, named tensors: features (the analysis pass), search (features_for_text, contrast),
    steering (max_activations, a clamp's held-out loss and its generation), evaluation (evaluate_activations,
    downstream_metrics) and widgets (PromptInspector, SteeringPlayground). ``sae`` is passed as given."""
    from widgets.prompt_inspector import PromptInspector
    from widgets.steering_playground import SteeringPlayground
    from workbench.analysis.features import FeatureConfig, compute_features
    from workbench.analysis.search import contrast_features, features_for_text
    from workbench.intervene.generation import GenerationConfig
    from workbench.intervene.steering import FeatureClamp, max_activations, steered_generate, steered_loss
    from workbench.sae.evaluate import downstream_metrics, evaluate_activations

    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    res = compute_features(store, sae, None, FeatureConfig(progress=False, top_k=4), model=model,
                           tokenizer=model.tokenizer, n_logits=3)
    features = {"max_activation": t(res.max_activation), "count": t(res.count), "mean": t(res.mean_activation)}
    hit = features_for_text(model, sae, PROMPT + " sat on the mat.", top_n=5)
    contrast = contrast_features(model, sae, TEXTS[:4], TEXTS[4:], top_n=5)
    search = {"acts": t(hit.acts), "hit_features": t([h.feature for h in hit.hits]),
              "contrast_features": t([c.feature for c in contrast]), "contrast_diff": t([c.diff for c in contrast])}
    mx = max_activations(store, sae)
    i = int(mx.argmax()) if feature is None else feature
    clamp = FeatureClamp(sae=sae, feature=i, value=3.0 * float(mx[i]), hook=HOOK)
    tokens = context_tokens(model)
    gen = steered_generate(model, PROMPT, clamp, GenerationConfig(max_new_tokens=6, n_samples=1, seed=0,
                                                                 temperature=0.0))
    sample = torch.cat(list(store.iter_batches(64, hook=HOOK, shuffle=False, drop_last=False)))
    steering = {"max_activations": t(mx), "clamped_acts": t(clamp.apply(sample)),
                "steered_loss": t(steered_loss(model, tokens, clamp)), "steered_ids": t(gen.ids)}
    act = evaluate_activations(sae, store.iter_batches(64, hook=HOOK, shuffle=False, drop_last=False))
    down = downstream_metrics(model, sae, tokens)
    evaluation = {"fvu": t(act.fvu), "l0": t(act.l0), "ce_loss_score": t(down.ce_loss_score),
                  "kl_div": t(down.kl_div), "ce_spliced": t(down.ce_spliced)}
    inspector = PromptInspector(model, sae, text=PROMPT + " sat.")
    play = SteeringPlayground(model, sae, mx, config=GenerationConfig(max_new_tokens=4, n_samples=1, seed=0,
                                                                      temperature=0.0), chat=False)
    play.set_prompt(PROMPT)
    play.set_feature(i)
    play.set_strength(3.0)
    play.run()
    widget = {"inspector_acts": t(inspector.result.acts), "inspector_features": t([h.feature for h in
                                                                                    inspector.result.hits]),
              "playground_clamped": t(play.steering().apply(sample)), "playground_steered_ids": t(play.steered.ids)}
    return {"features": features, "search": search, "steering": steering, "evaluation": evaluation,
            "widgets": widget}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest |a - b| over every named tensor of one entry point (inf when shapes differ; NaNs equal)."""
    worst = 0.0
    for key in a:
        x, y = a[key], b[key]
        if x.shape != y.shape:
            return float("inf")
        both_nan = torch.isnan(x) & torch.isnan(y)
        d = (x - y).abs().masked_fill(both_nan, 0.0)
        worst = max(worst, float(d.max()) if d.numel() else 0.0)
    return worst
