"""Multilingual features: the same content in several languages, and whether the same SAE features carry it.

Probes (research.md §6) come in *groups*: one text per language with the same content.

- :func:`wiki_probe_groups`: the first sentence of the same Wikipedia article in English, Spanish and French. The
  embedded summaries have no interlanguage links (each record holds only ``title``, ``extract``, ``description``
  and ``topic``), so the alignment is the curated title table :data:`WIKI_PARALLEL_TITLES`, checked against the
  corpus; ``shared_titles=n`` adds ``n`` articles whose title is identical in every language (mostly people and
  places, whose names, unlike concepts, share their surface form across languages).
- :func:`concept_probe_groups`: :data:`CONCEPT_SENTENCES`, short hand-written sentences on everyday concepts in six
  languages, written so that most content words differ between languages.

:func:`probe_activations` runs the model once over every text and keeps, per text, the mean SAE feature activation
over its tokens (BOS excluded) for one or several SAEs, and the mean residual at every layer. The measures:

- :func:`shared_top_features`: the features whose mean activation ranks in the top ``k`` in *every* language of a
  group (the paper's test: the Golden Gate feature was the top feature by mean activation in each language);
- :func:`topk_overlap`: the overlap of the top-k feature sets of the same group in two languages, against the
  shuffled-pairs baseline (group g in one language against a different group g' in the other), with a
  permutation p-value;
- :func:`overlap_by_layer` (one SAE per layer) and :func:`residual_similarity` (no SAE needed): how cross-lingual
  sharing varies with depth, the latter as the cosine of mean residuals of translations against mismatched pairs.

``how="specific"`` (see :func:`feature_scores`) subtracts each feature's mean over the *other* groups in the same
language before ranking, so that features that fire on every text (position, "prose", language identity) do not
fill every top-k set; ``how="mean"`` is the paper's raw mean activation.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.data.hooks import hook_layer, stop_layer
from workbench.core.hardware import torch_threads

__all__ = [
    "CONCEPT_SENTENCES",
    "LANGUAGE_NAMES",
    "Carrier",
    "WIKI_PARALLEL_TITLES",
    "LayerSimilarity",
    "OverlapResult",
    "ProbeActivations",
    "ProbeGroup",
    "SharedFeature",
    "concept_carrier",
    "concept_probe_groups",
    "feature_scores",
    "first_sentence",
    "overlap_by_layer",
    "probe_activations",
    "residual_similarity",
    "shared_title_groups",
    "shared_top_features",
    "top_k_frequency",
    "topk_overlap",
    "wiki_probe_groups",
]

LANGUAGE_NAMES: dict[str, str] = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
                                  "pt": "Portuguese"}

# The same article in the embedded en / es / fr summaries (JSON keys or title fields; every entry is checked by
# wiki_probe_groups and by the tests). Chosen for concepts and landmarks whose names differ between languages.
WIKI_PARALLEL_TITLES: tuple[dict[str, str], ...] = tuple(
    {"en": en, "es": es, "fr": fr} for en, es, fr in [
        ("Golden Gate Bridge", "Puente Golden Gate", "Pont du Golden Gate"),
        ("Eiffel Tower", "Torre Eiffel", "Tour Eiffel"),
        ("Statue of Liberty", "Estatua de la Libertad", "Statue de la Liberté"),
        ("Great Wall of China", "Gran Muralla China", "Grande Muraille"),
        ("Mount Everest", "Monte Everest", "Everest"),
        ("Pacific Ocean", "Océano Pacífico", "Océan Pacifique"),
        ("Amazon River", "Río Amazonas", "Amazone (fleuve)"),
        ("Earth", "Tierra", "Terre"),
        ("Chess", "Ajedrez", "Échecs"),
        ("Music", "Música", "Musique"),
        ("Mathematics", "Matemáticas", "Mathématiques"),
        ("London", "Londres", "Londres"),
        ("Germany", "Alemania", "Allemagne"),
        ("Panama Canal", "Canal de Panamá", "Canal de Panama"),
        ("Colosseum", "Coliseo", "Colisée"),
        ("Nile", "Nilo", "Nil"),
        ("Mediterranean Sea", "Mar Mediterráneo", "Mer Méditerranée"),
        ("Bread", "Pan", "Pain"),
        ("Tea", "Té", "Thé"),
        ("Violin", "Violín", "Violon"),
        ("Love", "Amor", "Amour"),
        ("Bicycle", "Bicicleta", "Bicyclette"),
        ("Telephone", "Teléfono", "Téléphone"),
        ("Computer", "Computadora", "Ordinateur"),
        ("Bridge", "Puente", "Pont"),
        ("Sadness", "Tristeza", "Tristesse"),
        ("Happiness", "Felicidad", "Bonheur"),
        ("Venice", "Venecia", "Venise"),
        ("Moscow", "Moscú", "Moscou"),
        ("Sistine Chapel", "Capilla Sixtina", "Chapelle Sixtine"),
        ("Niagara Falls", "Cataratas del Niágara", "Chutes du Niagara"),
        ("Atlantic Ocean", "Océano Atlántico", "Océan Atlantique"),
    ]
)

# Hand-written parallel sentences (one idea per group, six languages).
CONCEPT_SENTENCES: dict[str, dict[str, str]] = {
    "dog": {
        "en": "The dog barked at the stranger all night.",
        "es": "El perro le ladró al desconocido toda la noche.",
        "fr": "Le chien a aboyé contre l'inconnu toute la nuit.",
        "de": "Der Hund bellte den Fremden die ganze Nacht an.",
        "it": "Il cane ha abbaiato allo sconosciuto tutta la notte.",
        "pt": "O cachorro latiu para o estranho a noite toda.",
    },
    "rain": {
        "en": "It has been raining hard since early this morning.",
        "es": "Llueve con fuerza desde primera hora de la mañana.",
        "fr": "Il pleut très fort depuis tôt ce matin.",
        "de": "Es regnet seit dem frühen Morgen heftig.",
        "it": "Piove forte dalle prime ore del mattino.",
        "pt": "Está chovendo forte desde cedo pela manhã.",
    },
    "sadness": {
        "en": "She cried all evening because she felt so sad and lonely.",
        "es": "Lloró toda la tarde porque se sentía muy triste y sola.",
        "fr": "Elle a pleuré toute la soirée parce qu'elle se sentait triste et seule.",
        "de": "Sie weinte den ganzen Abend, weil sie sich so traurig und einsam fühlte.",
        "it": "Ha pianto tutta la sera perché si sentiva triste e sola.",
        "pt": "Ela chorou a noite inteira porque se sentia triste e sozinha.",
    },
    "doctor": {
        "en": "The doctor examined the sick child at the hospital.",
        "es": "El médico examinó al niño enfermo en el hospital.",
        "fr": "Le médecin a examiné l'enfant malade à l'hôpital.",
        "de": "Der Arzt untersuchte das kranke Kind im Krankenhaus.",
        "it": "Il medico ha visitato il bambino malato in ospedale.",
        "pt": "O médico examinou a criança doente no hospital.",
    },
    "bread": {
        "en": "My grandmother bakes fresh bread every morning.",
        "es": "Mi abuela hornea pan fresco cada mañana.",
        "fr": "Ma grand-mère fait cuire du pain frais chaque matin.",
        "de": "Meine Großmutter backt jeden Morgen frisches Brot.",
        "it": "Mia nonna cuoce il pane fresco ogni mattina.",
        "pt": "Minha avó assa pão fresco todas as manhãs.",
    },
    "money": {
        "en": "He borrowed money from the bank to buy a house.",
        "es": "Pidió dinero prestado al banco para comprar una casa.",
        "fr": "Il a emprunté de l'argent à la banque pour acheter une maison.",
        "de": "Er lieh sich Geld von der Bank, um ein Haus zu kaufen.",
        "it": "Ha chiesto un prestito alla banca per comprare una casa.",
        "pt": "Ele pediu dinheiro emprestado ao banco para comprar uma casa.",
    },
    "war": {
        "en": "Thousands of soldiers were killed during the war.",
        "es": "Miles de soldados murieron durante la guerra.",
        "fr": "Des milliers de soldats ont été tués pendant la guerre.",
        "de": "Tausende Soldaten wurden im Krieg getötet.",
        "it": "Migliaia di soldati furono uccisi durante la guerra.",
        "pt": "Milhares de soldados foram mortos durante a guerra.",
    },
    "singing": {
        "en": "The choir sang a beautiful song at the concert.",
        "es": "El coro cantó una canción preciosa en el concierto.",
        "fr": "La chorale a chanté une belle chanson pendant le concert.",
        "de": "Der Chor sang beim Konzert ein wunderschönes Lied.",
        "it": "Il coro ha cantato una bella canzone al concerto.",
        "pt": "O coral cantou uma bela canção no concerto.",
    },
    "school": {
        "en": "The teacher wrote the lesson on the blackboard for the pupils.",
        "es": "La maestra escribió la lección en la pizarra para los alumnos.",
        "fr": "L'institutrice a écrit la leçon au tableau pour les élèves.",
        "de": "Die Lehrerin schrieb die Lektion für die Schüler an die Tafel.",
        "it": "La maestra ha scritto la lezione alla lavagna per gli alunni.",
        "pt": "A professora escreveu a lição no quadro para os alunos.",
    },
    "ship": {
        "en": "The ship sailed across the ocean for three weeks.",
        "es": "El barco navegó por el océano durante tres semanas.",
        "fr": "Le navire a traversé l'océan pendant trois semaines.",
        "de": "Das Schiff segelte drei Wochen lang über das Meer.",
        "it": "La nave ha attraversato l'oceano per tre settimane.",
        "pt": "O navio atravessou o oceano durante três semanas.",
    },
    "winter": {
        "en": "In winter the snow covers the mountains and it is bitterly cold.",
        "es": "En invierno la nieve cubre las montañas y hace un frío terrible.",
        "fr": "En hiver, la neige couvre les montagnes et il fait un froid glacial.",
        "de": "Im Winter bedeckt Schnee die Berge und es ist eisig kalt.",
        "it": "In inverno la neve copre le montagne e fa un freddo pungente.",
        "pt": "No inverno a neve cobre as montanhas e faz um frio intenso.",
    },
    "fire": {
        "en": "The firefighters put out the fire that was burning the old barn.",
        "es": "Los bomberos apagaron el incendio que quemaba el viejo granero.",
        "fr": "Les pompiers ont éteint le feu qui brûlait la vieille grange.",
        "de": "Die Feuerwehr löschte den Brand, der die alte Scheune zerstörte.",
        "it": "I pompieri hanno spento l'incendio che bruciava il vecchio fienile.",
        "pt": "Os bombeiros apagaram o incêndio que queimava o velho celeiro.",
    },
    "cat": {
        "en": "The cat is sleeping on the warm windowsill.",
        "es": "El gato duerme en el alféizar caliente.",
        "fr": "Le chat dort sur le rebord chaud de la fenêtre.",
        "de": "Die Katze schläft auf der warmen Fensterbank.",
        "it": "Il gatto dorme sul davanzale caldo.",
        "pt": "O gato está dormindo no parapeito quente da janela.",
    },
    "golden_gate": {
        "en": "We drove across the Golden Gate Bridge into San Francisco.",
        "es": "Cruzamos en coche el puente Golden Gate para entrar en San Francisco.",
        "fr": "Nous avons traversé en voiture le pont du Golden Gate pour entrer dans San Francisco.",
        "de": "Wir fuhren über die Golden Gate Bridge nach San Francisco.",
        "it": "Abbiamo attraversato in auto il ponte Golden Gate per entrare a San Francisco.",
        "pt": "Atravessamos de carro a ponte Golden Gate para entrar em San Francisco.",
    },
}


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
    from workbench.data.corpus import wiki_article

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
    import random

    from workbench.data.corpus import CorpusSpec, iter_documents

    keys = None
    for lang in languages:
        titles = {doc.title for doc in iter_documents(CorpusSpec(languages=(lang,), split="all"))}
        keys = titles if keys is None else keys & titles
    pool = sorted(keys)
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


def _sae_dict(model, saes) -> dict[str, object]:
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
def probe_activations(model, saes, groups: Sequence[ProbeGroup], *, languages: Sequence[str] | None = None,
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


def _probe_activations(model, saes, groups, languages, residual_layers, batch_size: int, progress: bool
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
                resid[j, gi, li] = grabbed[h][r, first:n].mean(0)
            for h, sae in sae_map.items():
                x = grabbed[h][r, first:n].to(sae.device, sae.dtype)
                feats[h][gi, li] = sae.encode(x).float().mean(0).cpu()
    return ProbeActivations(groups=list(groups), languages=langs, features=feats, residuals=resid, layers=layers,
                            n_tokens=n_tok)


# ----------------------------------------------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------------------------------------------

SCORES = ("mean", "specific")


def feature_scores(acts: Tensor, how: str = "mean") -> Tensor:
    """Scores [G, L, d] to rank features by, from mean activations ``acts`` [G, L, d].

    ``"mean"``: the activations themselves. ``"specific"``: minus each feature's mean over the other groups in the
    same language (leave-one-out), so a feature that is as active on every text scores 0.
    """
    if acts.dim() != 3:
        raise ValueError(f"acts must be [n_groups, n_languages, d_sae], got shape {tuple(acts.shape)}")
    if how == "mean":
        return acts
    if how == "specific":
        G = acts.shape[0]
        if G < 2:
            raise ValueError("how='specific' needs at least two groups (it subtracts the other groups' mean)")
        others = (acts.sum(0, keepdim=True) - acts) / (G - 1)
        return acts - others
    raise ValueError(f"how must be one of {', '.join(SCORES)}, got {how!r}")


def _ranks(scores: Tensor) -> Tensor:
    """0-based descending rank of every entry along the last dim; entries <= 0 get rank = size (never top)."""
    d = scores.shape[-1]
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(d).expand_as(order).contiguous())
    return torch.where(scores > 0, ranks, torch.full_like(ranks, d))


@dataclass
class SharedFeature:
    """A feature in the top ``k`` of every language: its rank (0 = top) and score per language."""

    feature: int
    worst_rank: int
    ranks: dict[str, int]
    scores: dict[str, float]


def shared_top_features(scores: Tensor, languages: Sequence[str], k: int = 10) -> list[SharedFeature]:
    """Features ranked in the top ``k`` in every language of one group; ``scores`` [n_languages, d].

    Sorted by worst rank across languages, then by the mean score. The first entry is the best candidate for "one
    feature carries this content in every language"; an empty list means no feature makes the top ``k`` everywhere.
    """
    if scores.dim() != 2 or scores.shape[0] != len(languages):
        raise ValueError(f"scores must be [n_languages={len(languages)}, d], got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    ranks = _ranks(scores)
    worst = ranks.max(0).values
    keep = (worst < k).nonzero().flatten().tolist()
    mean = scores.mean(0)
    keep.sort(key=lambda i: (int(worst[i]), -float(mean[i])))
    return [SharedFeature(i, int(worst[i]), {lang: int(ranks[j, i]) for j, lang in enumerate(languages)},
                          {lang: float(scores[j, i]) for j, lang in enumerate(languages)}) for i in keep]


def top_k_frequency(scores: Tensor, k: int = 10) -> Tensor:
    """[d]: the fraction of all texts (every group and language of ``scores`` [G, L, d]) in whose top ``k`` each
    feature ranks. A feature in the top k of most texts is generic (position, prose, a language), not a concept."""
    if scores.dim() != 3:
        raise ValueError(f"scores must be [n_groups, n_languages, d], got shape {tuple(scores.shape)}")
    return (_ranks(scores) < k).double().mean(dim=(0, 1))


@dataclass
class Carrier:
    """The feature that comes closest to carrying one group's content in every language.

    ``feature``: the feature with the best worst-rank across languages (by ``how``); ``ranks`` its rank per language
    (0 = top); ``shared``: whether it is in the top ``k`` everywhere; ``generality``: the fraction of *all* probe
    texts in whose top ``k`` it ranks (near 1: it fires on everything, so it does not carry this content);
    ``density``: the fraction of corpus tokens it fires on (given the feature results), the plainest sign of a
    generic feature.
    """

    group: str
    how: str
    k: int
    feature: int
    ranks: dict[str, int]
    shared: bool
    generality: float
    density: float | None = None

    def describe(self) -> str:
        ranks = ", ".join(f"{lang} #{r + 1}" for lang, r in self.ranks.items())
        verdict = (f"in the top {self.k} of every language" if self.shared
                   else f"not in the top {self.k} of every language")
        density = f"; fires on {self.density:.2%} of corpus tokens" if self.density is not None else ""
        return (f"{self.group} ({self.how}): best feature F{self.feature} ranks {ranks}: {verdict}; it ranks in the "
                f"top {self.k} of {self.generality:.0%} of all probe texts{density}")


def concept_carrier(probes: "ProbeActivations", group: str | int, *, hook: str | None = None, k: int = 10,
                    how: str = "specific", results=None) -> Carrier:
    """The best single-feature carrier of ``group`` across its languages (see :class:`Carrier`); ``results`` (the
    SAE's :class:`~workbench.analysis.features.FeatureResults`) adds the feature's corpus density."""
    scores = feature_scores(probes.feature_acts(hook), how)
    gi = probes.group_index(group)
    ranks = _ranks(scores[gi])  # [L, d]
    worst = ranks.max(0).values
    mean = scores[gi].mean(0)
    best = min(range(worst.numel()), key=lambda i: (int(worst[i]), -float(mean[i])))
    freq = top_k_frequency(scores, k)
    if results is not None and int(results.d_sae) != int(scores.shape[-1]):
        raise ValueError(f"results have d_sae={results.d_sae} but the probes' SAE has d_sae={scores.shape[-1]}")
    return Carrier(group=probes.names[gi], how=how, k=k, feature=best,
                   ranks={lang: int(ranks[j, best]) for j, lang in enumerate(probes.languages)},
                   shared=bool(int(worst[best]) < k), generality=float(freq[best]),
                   density=float(results.density[best]) if results is not None else None)


@dataclass
class OverlapResult:
    """Top-k overlap (|A ∩ B| / k) of translations (``matched``) against mismatched groups (``baseline``).

    Means over language pairs; ``per_pair`` "en-es" -> (matched, baseline); ``per_group`` the matched overlap of
    each group averaged over pairs; ``p_value``: the fraction of random re-pairings of the groups whose mean overlap
    reaches the matched one (permutation test, 1/(n+1) at best).
    """

    k: int
    matched: float
    baseline: float
    p_value: float
    per_pair: dict[str, tuple[float, float]]
    per_group: dict[str, float]
    n_groups: int
    n_permutations: int

    @property
    def ratio(self) -> float:
        return self.matched / self.baseline if self.baseline > 0 else float("inf")

    def to_dict(self) -> dict:
        return asdict(self)


def _membership(scores: Tensor, k: int) -> Tensor:
    """[..., d] float 0/1: in the top k and > 0."""
    return (_ranks(scores) < k).float()


def topk_overlap(scores: Tensor, languages: Sequence[str], k: int = 10, *, names: Sequence[str] | None = None,
                 n_permutations: int = 1000, seed: int = 0) -> OverlapResult:
    """How many of a group's top-k features (by ``scores`` [G, L, d]) are shared between two languages, against
    the shuffled-pairs baseline: group g in language a against group g' != g in language b."""
    if scores.dim() != 3 or scores.shape[1] != len(languages):
        raise ValueError(f"scores must be [n_groups, n_languages={len(languages)}, d], got {tuple(scores.shape)}")
    G = scores.shape[0]
    if G < 2:
        raise ValueError("the shuffled-pairs baseline needs at least two groups")
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k={k} must be in [1, d={scores.shape[-1]}]")
    names = list(names) if names is not None else [str(i) for i in range(G)]
    member = _membership(scores, k)  # [G, L, d]
    off = ~torch.eye(G, dtype=torch.bool)
    mats, per_pair = [], {}
    for a, b in itertools.combinations(range(len(languages)), 2):
        m = member[:, a] @ member[:, b].T / k  # [G, G]
        mats.append(m)
        per_pair[f"{languages[a]}-{languages[b]}"] = (float(m.diagonal().mean()), float(m[off].mean()))
    stack = torch.stack(mats)  # [pairs, G, G]
    mean_mat = stack.mean(0)
    matched = float(mean_mat.diagonal().mean())
    baseline = float(mean_mat[off].mean())
    gen = torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(n_permutations):
        perm = torch.randperm(G, generator=gen)
        hits += float(mean_mat[torch.arange(G), perm].mean()) >= matched - 1e-12
    p = (hits + 1) / (n_permutations + 1)
    per_group = {n: float(v) for n, v in zip(names, mean_mat.diagonal())}
    return OverlapResult(k=k, matched=matched, baseline=baseline, p_value=p, per_pair=per_pair, per_group=per_group,
                         n_groups=G, n_permutations=n_permutations)


def overlap_by_layer(probes: ProbeActivations, k: int = 10, how: str = "mean", **kwargs) -> dict[str, OverlapResult]:
    """:func:`topk_overlap` for every SAE of ``probes`` (one per hook), in layer order."""
    out = {}
    for hook in sorted(probes.features, key=lambda h: (hook_layer(h) if hook_layer(h) is not None else 1 << 30, h)):
        scores = feature_scores(probes.features[hook], how)
        out[hook] = topk_overlap(scores, probes.languages, k, names=probes.names, **kwargs)
    return out


@dataclass
class LayerSimilarity:
    """Per layer: mean cosine of translations (``matched``) and of mismatched groups (``baseline``), and
    ``retrieval``: the fraction of (text, other language) where the nearest text of the other language is the
    translation (chance = 1 / n_groups)."""

    layers: list[int]
    matched: list[float]
    baseline: list[float]
    retrieval: list[float]
    center: str
    n_groups: int
    languages: list[str] = field(default_factory=list)

    @property
    def gap(self) -> list[float]:
        return [m - b for m, b in zip(self.matched, self.baseline)]

    def to_dict(self) -> dict:
        return {**asdict(self), "gap": self.gap}


CENTERS = ("none", "all", "language")


def residual_similarity(probes_or_residuals, languages: Sequence[str] | None = None, *, center: str = "all",
                        layers: Sequence[int] | None = None) -> LayerSimilarity:
    """Cross-lingual similarity of mean residuals at every layer (no SAE needed).

    ``center``: "all" subtracts the mean over every text at that layer (the residual stream has a large direction
    shared by all tokens, which makes every raw cosine near 1); "language" subtracts each language's own mean
    (removes the language-identity direction too); "none" keeps raw vectors.
    """
    if isinstance(probes_or_residuals, ProbeActivations):
        if probes_or_residuals.residuals is None:
            raise ValueError("these probes were run with residual_layers=False: rerun probe_activations with it True")
        resid = probes_or_residuals.residuals
        languages = probes_or_residuals.languages
        layers = probes_or_residuals.layers
    else:
        resid = probes_or_residuals
        if languages is None:
            raise ValueError("give languages= with a residual tensor")
        layers = list(layers) if layers is not None else list(range(resid.shape[0]))
    if resid.dim() != 4 or resid.shape[2] != len(languages):
        raise ValueError(f"residuals must be [n_layers, n_groups, n_languages={len(languages)}, d], "
                         f"got {tuple(resid.shape)}")
    if center not in CENTERS:
        raise ValueError(f"center must be one of {', '.join(CENTERS)}, got {center!r}")
    G, L = resid.shape[1], resid.shape[2]
    if G < 2:
        raise ValueError("the mismatched-pairs baseline needs at least two groups")
    x = resid.double()
    if center == "all":
        x = x - x.mean(dim=(1, 2), keepdim=True)
    elif center == "language":
        x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    off = ~torch.eye(G, dtype=torch.bool)
    matched, baseline, retrieval = [], [], []
    for li in range(x.shape[0]):
        ms, bs, rs = [], [], []
        for a, b in itertools.permutations(range(L), 2):
            cos = x[li, :, a] @ x[li, :, b].T  # [G, G]
            ms.append(cos.diagonal().mean())
            bs.append(cos[off].mean())
            rs.append((cos.argmax(dim=1) == torch.arange(G)).double().mean())
        matched.append(float(torch.stack(ms).mean()))
        baseline.append(float(torch.stack(bs).mean()))
        retrieval.append(float(torch.stack(rs).mean()))
    return LayerSimilarity(layers=list(layers), matched=matched, baseline=baseline, retrieval=retrieval,
                           center=center, n_groups=G, languages=list(languages))
