"""Parallel probes: the same content in several languages, and one pass of the model over them.

Probes (docs/methods.md §10) come in *groups* (:class:`ProbeGroup`): one text per language with the same content.

- :func:`wiki_probe_groups`: the first sentence of the same Wikipedia article in English, Spanish and French. The
  embedded summaries have no interlanguage links (each record holds only ``title``, ``extract``, ``description``
  and ``topic``), so the alignment is the curated title table :data:`WIKI_PARALLEL_TITLES`, checked against the
  corpus; :func:`shared_title_groups` adds articles whose title is identical in every language (mostly people and
  places, whose names, unlike concepts, share their surface form across languages).
- :func:`concept_probe_groups`: :data:`CONCEPT_SENTENCES`, short hand-written sentences on everyday concepts in six
  languages, written so that most content words differ between languages.

The tables live in ``resources/multilingual_probes.json``. :func:`probe_activations` runs the model once over every
text and keeps, per text, the mean SAE feature activation over its tokens (BOS excluded) for one or several SAEs,
and the mean residual at every layer (a :class:`ProbeActivations`); the measures on it are
:mod:`workbench.analysis.multilingual`.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.hardware import torch_threads
from workbench.core.protocols import ModelLike, SAELike
from workbench.core.resources import load_resource
from workbench.data.corpus import CorpusSpec, iter_documents, wiki_article
from workbench.data.hooks import stop_layer

__all__ = [
    "CONCEPT_SENTENCES",
    "LANGUAGE_NAMES",
    "WIKI_PARALLEL_TITLES",
    "ProbeActivations",
    "ProbeGroup",
    "concept_probe_groups",
    "first_sentence",
    "probe_activations",
    "shared_title_groups",
    "wiki_probe_groups",
]

RESOURCE = "multilingual_probes.json"
_DATA = load_resource(RESOURCE)

# Display names of the language codes.
LANGUAGE_NAMES: dict[str, str] = dict(_DATA["language_names"])

# The same article in the embedded en / es / fr summaries (JSON keys or title fields; every entry is checked by
# wiki_probe_groups and by the tests). Chosen for concepts and landmarks whose names differ between languages.
WIKI_PARALLEL_TITLES: tuple[dict[str, str], ...] = tuple(dict(entry) for entry in _DATA["wiki_parallel_titles"])

# Hand-written parallel sentences (one idea per group, six languages).
CONCEPT_SENTENCES: dict[str, dict[str, str]] = {name: dict(texts)
                                                for name, texts in _DATA["concept_sentences"].items()}


# ----------------------------------------------------------------------------------------------------------------
# Probe groups
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeGroup:
    """One content in several languages: ``texts`` maps a language code to its text."""

    name: str
    texts: dict[str, str]
    source: str = ""  # "wiki", "concepts", or anything the caller likes

    def __post_init__(self) -> None:
        if not self.texts:
            raise ValueError(f"probe group {self.name!r} has no texts: give at least one language -> text")
        empty = [lang for lang, text in self.texts.items() if not str(text).strip()]
        if empty:
            raise ValueError(f"probe group {self.name!r} has empty text(s) for {', '.join(empty)}")


# A sentence ends at . ! ? followed by a space and a capital (or an opening quote or mark before one). A period
# after a single letter ("J.", "a. C."), a capitalised two-letter abbreviation ("St.", "Dr.") or a dotted acronym
# ("U.S.") does not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"«¿¡(]?[A-ZÁÉÍÓÚÀÈÌÒÙÂÊÎÔÛÇÑÄÖÜ])")
_NOT_AN_END = re.compile(r"(?:\b[A-Za-z]|\b[A-Z][a-z]|\b(?:[A-Za-z]\.)+[A-Za-z])\.$")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (the whole text when it has one sentence)."""
    text = " ".join(str(text).split())
    if not text:
        raise ValueError("the text is empty: no first sentence")
    for match in _SENTENCE_END.finditer(text):
        head = text[: match.start()]
        if not _NOT_AN_END.search(head):
            return head
    return text


def wiki_probe_groups(titles: Sequence[Mapping[str, str]] = WIKI_PARALLEL_TITLES,
                      languages: Sequence[str] = ("en", "es", "fr"), *, sentences: int = 1) -> list[ProbeGroup]:
    """The first ``sentences`` sentence(s) of each aligned article, one group per entry of ``titles``.

    Each group is named by the English title when there is one (else the first language's). Raises ValueError when
    an entry lacks one of ``languages`` or names an article the embedded corpus does not hold.
    """
    if sentences < 1:
        raise ValueError(f"sentences={sentences} must be >= 1")
    groups = []
    for entry in titles:
        missing = [lang for lang in languages if lang not in entry]
        if missing:
            raise ValueError(f"title entry {dict(entry)} has no title for {', '.join(missing)}: give one per language")
        texts = {}
        for lang in languages:
            doc = wiki_article(lang, entry[lang])
            if doc is None:
                raise ValueError(f"the embedded {lang} wiki has no article {entry[lang]!r}: check the spelling "
                                 f"(JSON key or title field), or drop this entry")
            texts[lang] = _first_sentences(doc.text, sentences)
        groups.append(ProbeGroup(entry.get("en", entry[languages[0]]), texts, "wiki"))
    return groups


def _first_sentences(text: str, n: int) -> str:
    out, rest = [], " ".join(text.split())
    for _ in range(n):
        if not rest:
            break
        s = first_sentence(rest)
        out.append(s)
        rest = rest[len(s):].strip()
    return " ".join(out)


def shared_title_groups(n: int, languages: Sequence[str] = ("en", "es", "fr"), *, seed: int = 0,
                        sentences: int = 1) -> list[ProbeGroup]:
    """``n`` articles whose title (JSON key) is the same in every language, chosen by a seeded shuffle.

    These are mostly people and places: their names are the same tokens in every language, so the overlap they show
    is partly shared surface form; compare with the curated groups.
    """
    keys: set[str] | None = None
    for lang in languages:
        titles = {doc.title for doc in iter_documents(CorpusSpec(languages=(lang,), split="all"))
                  if doc.title is not None}  # wiki documents always carry their title
        keys = titles if keys is None else keys & titles
    pool = sorted(keys or ())
    random.Random(seed).shuffle(pool)
    entries = [{lang: key for lang in languages} for key in pool[: max(0, int(n))]]
    return wiki_probe_groups(entries, languages, sentences=sentences)


def concept_probe_groups(sentences: Mapping[str, Mapping[str, str]] = CONCEPT_SENTENCES,
                         languages: Sequence[str] | None = None) -> list[ProbeGroup]:
    """One group per concept of ``sentences`` (default :data:`CONCEPT_SENTENCES`), restricted to ``languages``."""
    groups = []
    for name, texts in sentences.items():
        langs = list(texts) if languages is None else list(languages)
        missing = [lang for lang in langs if lang not in texts]
        if missing:
            raise ValueError(f"concept {name!r} has no sentence in {', '.join(missing)}; it has {', '.join(texts)}")
        groups.append(ProbeGroup(name, {lang: texts[lang] for lang in langs}, "concepts"))
    return groups


# ----------------------------------------------------------------------------------------------------------------
# Running the model
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeActivations:
    """Per-text means over each text's tokens (BOS excluded).

    ``features[hook]`` [n_groups, n_languages, d_sae]: mean SAE activations of the SAE at that hook.
    ``residuals`` [n_layers, n_groups, n_languages, d_model]: mean ``blocks.<layer>.hook_resid_post`` (or None).
    ``n_tokens`` [n_groups, n_languages]: tokens averaged (BOS excluded).
    """

    groups: list[ProbeGroup]
    languages: list[str]
    features: dict[str, Tensor]
    residuals: Tensor | None
    layers: list[int]
    n_tokens: Tensor

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def hooks(self) -> list[str]:
        return list(self.features)

    def group_index(self, group: str | int) -> int:
        """The row of ``group`` (a name or an index); ValueError names the known groups."""
        if isinstance(group, int) and not isinstance(group, bool):
            if not 0 <= group < len(self.groups):
                raise ValueError(f"group index {group} out of range: there are {len(self.groups)} groups")
            return group
        names = self.names
        if group not in names:
            raise ValueError(f"unknown probe group {group!r}; known: {', '.join(names)}")
        return names.index(group)

    def feature_acts(self, hook: str | None = None) -> Tensor:
        """``features[hook]``; ``hook`` may be left out when there is one SAE."""
        if hook is None:
            if len(self.features) != 1:
                raise ValueError(f"several SAEs ({', '.join(self.features)}): pass hook=")
            return next(iter(self.features.values()))
        if hook not in self.features:
            raise ValueError(f"no SAE at {hook!r}; this probe set has {', '.join(self.features) or 'none'}")
        return self.features[hook]


def _sae_dict(model: ModelLike, saes: SAELike | Mapping[str, SAELike] | None) -> dict[str, SAELike]:
    if saes is None:
        return {}
    if not isinstance(saes, Mapping):
        hook = getattr(getattr(saes, "metadata", None), "hook_name", None)
        if not hook:
            raise ValueError("the SAE's metadata names no hook: pass {'blocks.<layer>.hook_resid_post': sae}")
        saes = {hook: saes}
    d_model = int(model.cfg.d_model)
    for hook, sae in saes.items():
        if hook not in model.hook_dict:
            raise ValueError(f"unknown hook {hook!r} for this model; e.g. 'blocks.{model.cfg.n_layers // 2}."
                             f"hook_resid_post'")
        if int(sae.cfg.d_in) != d_model:
            raise ValueError(f"d_model mismatch: the SAE at {hook!r} takes d_in={sae.cfg.d_in} but the model's "
                             f"d_model is {d_model}: use an SAE trained on this model")
    return dict(saes)


def _languages(groups: Sequence[ProbeGroup], languages: Sequence[str] | None) -> list[str]:
    if not groups:
        raise ValueError("no probe groups: give at least one ProbeGroup")
    langs = list(languages) if languages is not None else list(groups[0].texts)
    if len(langs) < 2:
        raise ValueError(f"need at least two languages to compare, got {langs}")
    for g in groups:
        missing = [lang for lang in langs if lang not in g.texts]
        if missing:
            raise ValueError(f"probe group {g.name!r} has no text in {', '.join(missing)}: drop the group or the "
                             f"language (languages=...)")
    return langs


@torch.no_grad()
def probe_activations(model: ModelLike, saes, groups: Sequence[ProbeGroup], *, languages: Sequence[str] | None = None,
                      residual_layers: bool | Sequence[int] = True, batch_size: int = 16,
                      progress: bool = False, threads: int | None = None) -> ProbeActivations:
    """Run ``model`` over every text of ``groups`` and average per text (BOS excluded).

    ``saes``: an SAE (at its metadata's hook), a mapping hook -> SAE, or None (residuals only). ``residual_layers``:
    True for every layer's ``hook_resid_post``, a list of layers, or False. Texts are right-padded into batches of
    ``batch_size``: causal attention keeps the real tokens exact, and the means skip the padding. ``threads``: torch
    CPU threads for the pass (None: unchanged; 1 is several times faster on a CPU shared with other work).
    """
    with torch_threads(threads):
        return _probe_activations(model, saes, groups, languages, residual_layers, batch_size, progress)


def _probe_activations(model: ModelLike, saes, groups, languages, residual_layers, batch_size: int, progress: bool
                       ) -> ProbeActivations:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    sae_map = _sae_dict(model, saes)
    langs = _languages(groups, languages)
    n_layers = int(model.cfg.n_layers)
    if residual_layers is True:
        layers = list(range(n_layers))
    elif residual_layers is False or residual_layers is None:
        layers = []
    else:
        layers = sorted({int(x) for x in residual_layers})
        bad = [x for x in layers if not 0 <= x < n_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range: the model has layers 0..{n_layers - 1}")
    if not sae_map and not layers:
        raise ValueError("nothing to compute: give saes= or residual_layers=")
    tok = model.tokenizer
    bos = tok.bos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    items = [(gi, li, g.texts[lang]) for gi, g in enumerate(groups) for li, lang in enumerate(langs)]
    ids = [([bos] if bos is not None else []) + list(tok(text, add_special_tokens=False)["input_ids"])
           for _, _, text in items]
    first = 1 if bos is not None else 0
    if any(len(x) <= first for x in ids):
        raise ValueError("a probe text tokenises to nothing")
    G, L = len(groups), len(langs)
    device = next(model.parameters()).device
    feats = {h: torch.zeros(G, L, int(s.cfg.d_sae)) for h, s in sae_map.items()}
    resid = torch.zeros(len(layers), G, L, int(model.cfg.d_model)) if layers else None
    n_tok = torch.zeros(G, L, dtype=torch.long)
    resid_hooks = {f"blocks.{layer}.hook_resid_post": j for j, layer in enumerate(layers)}
    wanted = set(resid_hooks) | set(sae_map)
    stop = stop_layer(model, sorted(wanted))
    order = sorted(range(len(items)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="probes", disable=not progress):
        width = max(len(ids[i]) for i in batch)
        toks = torch.full((len(batch), width), pad, dtype=torch.long)
        for r, i in enumerate(batch):
            toks[r, : len(ids[i])] = torch.tensor(ids[i])
        grabbed: dict[str, Tensor] = {}

        def grab(act, hook):
            grabbed[hook.name] = act.detach().float().cpu()
            return act

        model.run_with_hooks(toks.to(device), fwd_hooks=[(h, grab) for h in wanted], stop_at_layer=stop,
                             attention_mask=torch.ones_like(toks).to(device), return_type=None)
        for r, i in enumerate(batch):
            gi, li, _ = items[i]
            n = len(ids[i])
            n_tok[gi, li] = n - first
            for h, j in resid_hooks.items():
                if resid is not None:  # (resid_hooks is empty when it is None)
                    resid[j, gi, li] = grabbed[h][r, first:n].mean(0)
            for h, sae in sae_map.items():
                x = grabbed[h][r, first:n].to(sae.device, sae.dtype)
                feats[h][gi, li] = sae.encode(x).float().mean(0).cpu()
    return ProbeActivations(groups=list(groups), languages=langs, features=feats, residuals=resid, layers=layers,
                            n_tokens=n_tok)
