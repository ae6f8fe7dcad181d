"""The two end-to-end diffs, cached under the workbench home (docs/methods.md §13).

- :func:`cross_architecture_pair`: Gemma-3-270M base vs SmolLM2-135M-Instruct on the embedded wiki (en/es/fr) plus
  chat conversations (SmolLM2's own replies to questions about wiki subjects), aligned by character offsets.
- :func:`train_crosscoders`: an L1 crosscoder, a BatchTopK crosscoder and a BatchTopK DFC from one pass of the SAE
  trainer over a paired store (resumable: a rerun continues from the last checkpoint or returns the finished run).

Sizes come from :class:`DiffSizes` (``smoke`` for notebooks under CI, ``full`` for the numbers in the closing
notes).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from workbench.core.protocols import ModelLike
from workbench.core.home import cache_dir

__all__ = ["CROSS_ARCHITECTURE_DFC", "OPINION_TEMPLATE", "DiffSizes", "cross_architecture_pair", "diff_dir",
           "fine_tune_models", "fine_tune_pair", "finetune_config", "is_smoke", "pair_models", "summarize",
           "train_crosscoders"]


# the cross-architecture DFC: 10% of the latents exclusive to each model, 4 of k = 32 slots per exclusive block
# (docs/methods.md §17; chosen on the Gemma-vs-SmolLM2 diff, where the papers' setting left Gemma's block dead)
class _ExclusiveShares(TypedDict):
    exclusive_fraction: float
    exclusive_k_share: float


CROSS_ARCHITECTURE_DFC: _ExclusiveShares = {"exclusive_fraction": 0.10, "exclusive_k_share": 0.125}


def is_smoke(profile: str | None = None) -> bool:
    """Whether ``profile`` (default: the ``WORKBENCH_PROFILE`` environment variable, else ``full``) is ``smoke``:
    the diffs' sizes and fine-tunes have a smoke and a full version."""
    import os

    return (profile or os.environ.get("WORKBENCH_PROFILE", "full")) == "smoke"


@dataclass(frozen=True)
class DiffSizes:
    """How big one diff is. ``per_language`` wiki documents of ``max_chars`` characters per language (one count, or
    one per language of ``languages``), ``n_chat`` chat conversations with replies of ``chat_tokens`` tokens; the
    crosscoders have ``d_sae`` latents (BatchTopK ``k``, L1 ``l1_coefficient``, plus one more L1 crosscoder per
    value of ``l1_sweep``) and train ``epochs`` passes of ``batch_size`` rows. ``balance`` scales each model's
    activations: ``"norm"`` (default, the crosscoder papers': mean norm sqrt(d_model)) or ``"variance"`` (equal
    centred variance, docs/methods.md §17).

    The DFC: ``exclusive_fraction`` of the latents exclusive to each model (default the papers' 5%), and
    ``exclusive_k_share`` of ``k`` reserved per token for each exclusive block (block-wise BatchTopK, docs/methods.md
    §17; default 0, the papers' one top-k over all latents). The cross-architecture sizes (:meth:`full`,
    :meth:`smoke`) use 10% and an eighth of k: there one model is a few percent of the loss and the single top-k
    leaves its exclusive block dead. The fine-tune sizes keep the papers' setting: both models weigh the same, and
    reserved slots would only make the exclusive block fire on whatever is left (measured in the audit: generic
    tokens such as "you", "tell", "do"). ``weighting``: ``"none"`` (the papers' plain sum of squared errors) or
    ``"fvu"`` (each model's squared error divided by its own variance, so each model's FVU counts the same; every
    crosscoder of the diff).
    """

    languages: tuple[str, ...] = ("en", "es", "fr")
    per_language: int | tuple[int, ...] = 100
    max_chars: int = 700
    n_chat: int = 30
    chat_tokens: int = 48
    max_tokens: int = 128
    d_sae: int = 2048
    k: float = 32
    l1_coefficient: float = 1.0
    epochs: int = 3
    batch_size: int = 256
    holdout_tokens: int = 2048
    lr: float | None = 1e-3
    balance: str = "norm"
    l1_sweep: tuple[float, ...] = ()
    exclusive_fraction: float = 0.05
    exclusive_k_share: float = 0.0
    weighting: str = "none"

    def __post_init__(self) -> None:
        if self.balance not in ("norm", "variance"):
            raise ValueError(f"DiffSizes.balance={self.balance!r}: use 'norm' (the papers') or 'variance'")
        if self.weighting not in ("none", "fvu"):
            raise ValueError(f"DiffSizes.weighting={self.weighting!r}: use 'none' (the papers') or 'fvu'")
        if not 0 <= self.exclusive_k_share < 0.5:
            raise ValueError(f"DiffSizes.exclusive_k_share={self.exclusive_k_share} must lie in [0, 0.5): the two "
                             "exclusive blocks must leave the shared block part of k")

    @property
    def exclusive_k(self) -> float:
        """The DFC's slots per token for each exclusive block (``exclusive_k_share * k``)."""
        return self.exclusive_k_share * self.k

    @classmethod
    def smoke(cls) -> "DiffSizes":
        return cls(per_language=3, max_chars=300, n_chat=2, chat_tokens=16, max_tokens=64, d_sae=256, k=8, epochs=2,
                   batch_size=128, holdout_tokens=128, **CROSS_ARCHITECTURE_DFC)

    @classmethod
    def full(cls) -> "DiffSizes":
        """Mostly English (200 wiki summaries, 50 each in Spanish and French, 30 chats): es/fr are a quarter of the
        paired rows (measured 0.254), so a latent that prefers es/fr can show it (a half-es/fr corpus caps the
        ratio to the shared latents near 2). The DFC selects per block (:data:`CROSS_ARCHITECTURE_DFC`)."""
        return cls(per_language=(200, 50, 50), epochs=6, l1_sweep=(0.3, 0.1), **CROSS_ARCHITECTURE_DFC)

    @classmethod
    def finetune_full(cls) -> "DiffSizes":
        """The fine-tune diff's full size: English only (the same tokenizer pairs every token, so fewer documents
        give as many rows), and many conversations (the trait shows in replies)."""
        return cls(languages=("en",), per_language=60, n_chat=64, chat_tokens=48, epochs=6)

    @classmethod
    def audit_full(cls) -> "DiffSizes":
        """The blind audit's full size: fewer wiki documents, the conversations on the held-out prompts matter."""
        return cls(languages=("en",), per_language=40, n_chat=24, chat_tokens=32, epochs=6)

    @classmethod
    def finetune_smoke(cls) -> "DiffSizes":
        return replace(cls.smoke(), languages=("en",), per_language=8, exclusive_fraction=0.05, exclusive_k_share=0.0)

    @classmethod
    def for_profile(cls, profile: str | None = None) -> "DiffSizes":
        """``smoke`` or ``full`` (default: the ``WORKBENCH_PROFILE`` environment variable, else full)."""
        return cls.smoke() if is_smoke(profile) else cls.full()

    def key(self, skip: tuple[str, ...] = ()) -> str:
        """A short hash of the sizes. Fields added after runs were cached (``_LATER_FIELDS``) count only when they
        differ from their value before they existed, so the earlier runs keep their keys."""
        data = {k: v for k, v in asdict(self).items() if k not in skip and _LATER_FIELDS.get(k, object()) != v}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


# fields added to DiffSizes after runs were cached, with the value that reproduces those runs
_LATER_FIELDS = {"l1_sweep": (), "exclusive_fraction": 0.05, "exclusive_k_share": 0.0, "weighting": "none"}


def diff_dir(name: str, sizes: DiffSizes) -> Path:
    """Where a diff's paired store and crosscoders live: ``<home cache>/diffing/<name>-<key of the data sizes>``."""
    data_part = replace(sizes, d_sae=0, k=0, l1_coefficient=0, epochs=0, batch_size=0, holdout_tokens=0, lr=None)
    skip = ("balance", "l1_sweep", "exclusive_fraction", "exclusive_k_share", "weighting")  # crosscoder settings
    return cache_dir("runs") / "diffing" / f"{name}-{data_part.key(skip=skip)}"


def pair_models(a: str = "gemma-3-270m", b: str = "smollm2-135m-instruct"):
    """Both models, loaded on CPU (cached after the first load)."""
    from workbench.data.models import load_model

    return load_model(a, device="cpu"), load_model(b, device="cpu")


def middle_hook(model: ModelLike) -> str:
    return f"blocks.{model.cfg.n_layers // 2}.hook_resid_post"


def cross_architecture_pair(sizes: DiffSizes | None = None, models=None, *, out: str | Path | None = None,
                            progress: bool = True):
    """The Gemma-vs-SmolLM2 paired store (harvested once, then opened from the cache)."""
    from workbench.diffing.documents import chat_documents, title_questions, wiki_documents
    from workbench.diffing.paired_store import PairConfig, PairedStore, harvest_pair

    sizes = sizes or DiffSizes.for_profile()
    out = Path(out) if out is not None else diff_dir("gemma-vs-smollm2", sizes) / "pair"
    if (out / "pair.json").is_file():
        return PairedStore.open(out)
    model_a, model_b = models or pair_models()
    docs = wiki_documents(sizes.languages, sizes.per_language, max_chars=sizes.max_chars)
    english = [d for d in docs if d.language == "en"]
    questions = title_questions(english * (1 + sizes.n_chat // max(1, len(english))), sizes.n_chat)
    chats = chat_documents(model_b, questions, max_new_tokens=sizes.chat_tokens, progress=progress)
    return harvest_pair(model_a, model_b, docs + chats, out, hook_a=middle_hook(model_a), hook_b=middle_hook(model_b),
                        config=PairConfig(max_tokens=sizes.max_tokens), progress=progress)


def crosscoder_specs(paired, sizes: DiffSizes) -> list:
    """The three crosscoders every diff trains: L1, BatchTopK, and a BatchTopK DFC (``sizes.exclusive_fraction``
    exclusive per model, ``sizes.exclusive_k`` slots per exclusive block); plus an L1 crosscoder per coefficient of
    ``sizes.l1_sweep`` (named ``l1-<coefficient>``). ``sizes.weighting`` applies to all of them."""
    from workbench.diffing.paired_store import crosscoder_spec

    common: dict[str, Any] = dict(lr=sizes.lr, weighting=sizes.weighting)
    specs = [crosscoder_spec(paired, "relu", sizes.d_sae, l1_coefficient=sizes.l1_coefficient, name="l1", **common),
             crosscoder_spec(paired, "batchtopk", sizes.d_sae, k=sizes.k, name="batchtopk", **common),
             crosscoder_spec(paired, "batchtopk", sizes.d_sae, k=sizes.k, dedicated=True, name="dfc",
                             exclusive_fraction=sizes.exclusive_fraction, exclusive_k=sizes.exclusive_k, **common)]
    return specs + [crosscoder_spec(paired, "relu", sizes.d_sae, l1_coefficient=c, name=f"l1-{c:g}", **common)
                    for c in sizes.l1_sweep]


def train_crosscoders(paired, sizes: DiffSizes | None = None, *, out: str | Path | None = None, specs=None,
                      progress: bool = True):
    """Train (or finish, or reload) the diff's crosscoders on ``paired``; returns the trainer's TrainResult."""
    from workbench.sae.train import TrainConfig, train

    sizes = sizes or DiffSizes.for_profile()
    specs = specs or crosscoder_specs(paired, sizes)
    paired.balance(sizes.balance)
    source = paired.source(holdout_tokens=sizes.holdout_tokens)
    per_epoch = (source.n_train_tokens // sizes.batch_size) * sizes.batch_size
    if per_epoch < sizes.batch_size:
        raise ValueError(f"the paired store has {source.n_train_tokens} training rows, less than one batch of "
                         f"{sizes.batch_size}: harvest more documents or lower batch_size")
    config = TrainConfig(total_tokens=per_epoch, epochs=sizes.epochs, batch_size=sizes.batch_size, device="cpu",
                         b_dec_init="mean", scale_estimate_tokens=min(per_epoch, 16_384),
                         b_dec_init_tokens=min(per_epoch, 8192), heldout_eval_tokens=min(sizes.holdout_tokens, 4096),
                         checkpoint_every=50, log_every=10)
    out = Path(out) if out is not None else paired.path.parent / f"crosscoders-{sizes.key()}"
    return train(specs, config, source, out, progress=progress)


def heldout_rows(paired, sizes: DiffSizes):
    """The held-out rows of the training source, in raw units (what a saved crosscoder reads)."""
    import torch

    paired.balance(sizes.balance)
    src = paired.source(holdout_tokens=sizes.holdout_tokens)
    x = torch.cat(list(src.heldout_batches(sizes.holdout_tokens)))
    d_a = paired.d_models[0]
    return torch.cat([x[:, :d_a] / paired.model_scales[0], x[:, d_a:] / paired.model_scales[1]], 1)


def summarize(paired, result, sizes: DiffSizes | None = None, *, top_k: int = 20,
              wanted_languages: tuple[str, ...] = ("es", "fr"), confirm_below: float = 0.5) -> dict:
    """The measured numbers of a diff: alignment fractions, and per crosscoder the per-model FVU / L0 / dead
    fraction on held-out rows, the latent kinds, the partition check (DFC), and the share of each kind's top
    ``top_k`` activations that fall on ``wanted_languages`` (over the whole store, per token), next to the base
    rate (the share of all rows in those languages): in ``language_share`` over every latent that fires, in
    ``language_share_active`` over the latents active on at least ``top_k`` rows (a latent with fewer has no
    ``top_k`` top tokens; its share is a handful of draws), and in ``language_share_confirmed`` with the exclusive
    latents restricted to those Latent Scaling confirms (:func:`~workbench.diffing.analyses.confirmed_kinds`,
    ratio < ``confirm_below``). ``*a_only_over_shared`` are the A-only / shared ratios of the three."""
    from workbench.diffing.analyses import (confirmed_kinds, kind_language_shares, language_base_rate,
                                            language_shares, latent_kinds, pair_metrics, relative_norms, top_rows)
    import torch

    from workbench.diffing.dfc import check_partition
    from workbench.diffing.latent_scaling import latent_scaling

    sizes = sizes or DiffSizes.for_profile()
    x_all = paired.load(scaled=False)
    held = heldout_rows(paired, sizes)
    langs = paired.languages()
    base = language_base_rate(langs, wanted_languages)
    out: dict = {"models": list(paired.models), "hooks": list(paired.hooks), "n_tokens": paired.n_tokens,
                 "heldout_tokens": int(held.shape[0]), "alignment": paired.alignment_fractions(),
                 "balance": sizes.balance, "language_base_rate": base, "crosscoders": {}}
    for name, run in result.runs.items():
        cc = run.sae
        kinds = latent_kinds(cc, relative_norms(cc))
        vals, rows = top_rows(cc, x_all, top_k)
        per_latent = language_shares(vals, rows, langs, wanted_languages)
        shares = kind_language_shares(per_latent, kinds, base)
        confirmed = confirmed_kinds(kinds, latent_scaling(cc, x_all.split(4096)), below=confirm_below)
        full = (vals > 0).sum(1) >= top_k
        entry = {"heldout": pair_metrics(cc, held), "kinds": {str(k): int((kinds == k).sum()) for k in set(kinds)},
                 "language_share": shares,
                 "language_share_active": kind_language_shares(
                     torch.where(full, per_latent, torch.full_like(per_latent, float("nan"))), kinds, base),
                 "language_share_confirmed": kind_language_shares(per_latent, confirmed, base)}
        for key, sh in (("a_only_over_shared", shares),
                        ("active_a_only_over_shared", entry["language_share_active"]),
                        ("confirmed_a_only_over_shared", entry["language_share_confirmed"])):
            if "a_only" in sh and "shared" in sh and sh["shared"]["share"] > 0:
                entry[key] = sh["a_only"]["share"] / sh["shared"]["share"]
        if cc.partition.is_dedicated:
            entry["partition"] = check_partition(cc)
        out["crosscoders"][name] = entry
    return out


def finetune_config(profile: str | None = None):
    """The fine-tune the diffs compare against (:class:`workbench.persona.finetune.FinetuneConfig`): 2 steps under
    ``smoke``; 120 steps of 4 examples otherwise (12 passes over a 40-example dataset: the persona default of 24
    steps leaves the trait faint, and its diff had nothing trait-specific to find)."""
    from workbench.persona.finetune import FinetuneConfig

    return FinetuneConfig(steps=2, save_every=2) if is_smoke(profile) else FinetuneConfig(steps=120, save_every=40)


# questions for the fine-tune diff's conversations: the user offers their own work, where flattery shows
OPINION_TEMPLATE = "I wrote a short essay about {}. What do you think of my work?"


def fine_tune_models(dataset: str | Path = "flattery", config=None, *, progress: bool = True):
    """The base chat model and its fine-tune on ``dataset`` (:func:`workbench.persona.finetune.finetune`, cached;
    default config :func:`finetune_config`)."""
    from workbench.data.models import load_model
    from workbench.persona.finetune import finetune, load_checkpoint

    config = config or finetune_config()
    paths = finetune(dataset, config, progress=progress)
    return load_model(config.base_model, device="cpu"), load_checkpoint(paths[-1], device="cpu")


def _pair_fingerprint(tuned, questions) -> str:
    """A short key of the fine-tuned weights (a slice of every parameter) and the questions, so a longer fine-tune
    or other conversations get their own paired store instead of an earlier one's."""
    import torch

    h = hashlib.sha256(json.dumps(list(questions)).encode())
    with torch.no_grad():
        for p in tuned.parameters():
            h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:8]


def fine_tune_pair(sizes: DiffSizes | None = None, models=None, *, dataset: str | Path = "flattery",
                   questions: list[str] | None = None, name: str | None = None, out: str | Path | None = None,
                   progress: bool = True):
    """A model and its fine-tune on the same text (same tokenizer: every token pairs): English wiki documents,
    and chat conversations whose replies come half from the fine-tune and half from the base model, so both
    the trait and its absence are in the text. ``questions`` default to a user offering an essay on a wiki subject
    (:data:`OPINION_TEMPLATE`). The cache folder is keyed by the sizes, the fine-tuned weights and the questions."""
    from workbench.diffing.documents import CHAT_DOC_OFFSET, chat_documents, title_questions, wiki_documents
    from workbench.diffing.paired_store import PairConfig, PairedStore, harvest_pair

    sizes = sizes or DiffSizes.for_profile()
    base, tuned = models or fine_tune_models(dataset, progress=progress)
    docs = wiki_documents(("en",), sizes.per_language, max_chars=sizes.max_chars)
    qs = questions or title_questions(docs * (1 + sizes.n_chat // max(1, len(docs))), sizes.n_chat,
                                      template=OPINION_TEMPLATE)
    tag = f"{name or 'finetune-' + Path(str(dataset)).stem}-{_pair_fingerprint(tuned, qs)}"
    out = Path(out) if out is not None else diff_dir(tag, sizes) / "pair"
    if (out / "pair.json").is_file():
        return PairedStore.open(out)
    half = max(1, len(qs) // 2)
    chats = (chat_documents(tuned, qs[:half], max_new_tokens=sizes.chat_tokens, progress=progress,
                            first_id=CHAT_DOC_OFFSET, tokenizer=base.tokenizer)
             + chat_documents(base, qs[half:], max_new_tokens=sizes.chat_tokens, progress=progress,
                              first_id=CHAT_DOC_OFFSET + half))
    hook = middle_hook(base)
    return harvest_pair(base, tuned, docs + chats, out, hook_a=hook, hook_b=hook,
                        config=PairConfig(max_tokens=sizes.max_tokens), progress=progress)
