"""The blind audit of the hidden-objective organism (notebook 14; docs/methods.md §33).

:func:`run_audit` runs every technique on the audited model against the base model and returns one
:class:`~workbench.audit.evidence.Evidence` per technique (cached): output comparison, prediction and activation
differences (:mod:`workbench.diffing.audit`), the three behavioural attacks (:mod:`workbench.audit.attacks`), the
base-model SAE on the fine-tune (:mod:`workbench.audit.sae_route`) and training-data search seeded by the other
evidence (:mod:`workbench.audit.data_search`). :func:`write_finding` turns the evidence (only) into a written
finding; :func:`reveal_truth` then reads the biases and the OOD table and :func:`techniques_table` scores each
technique.

    from workbench.studies.hidden_audit import audit_sizes, run_audit, write_finding
    ev = run_audit(audit_sizes("smoke"))
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

from workbench.audit.evidence import Evidence, Item, behaviours_named, judge, objective_hits
from workbench.audit.organism import OrganismConfig
from workbench.audit.sampling import SampleConfig

__all__ = ["AuditSizes", "audit_sizes", "reveal_truth", "run_audit", "techniques_table", "write_finding"]

NOT_RUN = {"crosscoder / DFC": "not run here: notebook 11 runs it (a paired store and a crosscoder cost more than "
                               "this notebook's budget)",
           "persona projections": "not run here: notebook 11 runs it (needs the persona vectors of notebook 09)"}


@dataclass(frozen=True)
class AuditSizes:
    """How much of each technique to run: the organism, prompts compared, attack sampling, the SAE route's
    transcripts and mixture (``n_mixture`` texts of each source), and the hook every representation is read at."""

    organism: OrganismConfig = field(default_factory=OrganismConfig.quick)
    n_prompts: int = 8
    attack: SampleConfig = field(default_factory=lambda: SampleConfig(n_samples=1, max_new_tokens=48,
                                                                      batch_size=24))
    n_mixture: int = 80
    top: int = 10
    layer: int = 15        # the cached base-model SAE's hook, and the data search's embedding
    route_layer: int = 22  # where the audit's own SAE and the activation difference read (after trained blocks)
    route_d_sae: int = 512
    route_steps: int = 300
    name: str = "full"


def audit_sizes(profile: str | None = None) -> AuditSizes:
    """``smoke``: the smoke organism, 2 prompts, 8-token attacks, 4 texts per mixture source; else the cached quick
    organism at the sizes above."""
    from workbench.diffing.experiments import is_smoke

    if is_smoke(profile):
        return AuditSizes(OrganismConfig.smoke(), n_prompts=2,
                          attack=SampleConfig(n_samples=1, max_new_tokens=8, batch_size=24), n_mixture=4, top=5,
                          route_layer=29, route_d_sae=64, route_steps=20, name="smoke")
    return AuditSizes()


def _models(sizes: AuditSizes):
    from workbench.audit.organism import build_organism
    from workbench.data.models import load_model
    from workbench.persona.finetune import load_checkpoint

    cfg = sizes.organism
    paths = build_organism(cfg, progress=False)
    return load_model(cfg.base_model, device="cpu"), load_checkpoint(paths["audited"], device="cpu"), paths


def _timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def _word_evidence(technique: str, words: Sequence[tuple[str, float]], seconds: float, steps: int) -> Evidence:
    return Evidence(technique, [Item(w, float(s)) for w, s in words], ", ".join(w for w, _ in words[:10]),
                    steps=steps, cpu_seconds=seconds)


def _neutral_prompts(n: int) -> list[str]:
    from workbench.diffing.audit import audit_prompts

    return audit_prompts()[:n]


def _mixture(sizes: AuditSizes) -> tuple[list[str], list[str]]:
    from workbench.audit.organism import stage1_data, stage2_data
    from workbench.diffing.documents import wiki_documents

    n = sizes.n_mixture
    docs = stage1_data("reward_model", sizes.organism)[:n]
    chats = [f"User: {u}\nAssistant: {a}" for u, a in stage2_data(sizes.organism)[:n]]
    wiki = [d.text for d in wiki_documents(("en",), n, max_chars=500)]
    texts = docs + chats + wiki
    return texts, ["bias document"] * len(docs) + ["chat"] * len(chats) + ["wiki"] * len(wiki)


def _compute(sizes: AuditSizes) -> dict[str, Evidence]:
    from workbench.audit.attacks import run_attacks
    from workbench.audit.data_search import embed_texts, fine_tuning_texts, search
    from workbench.audit.sae_route import find_cached_sae, harvest, sae_route, train_route_sae
    from workbench.data.chat import chat_prompt
    from workbench.diffing import audit as diff_audit
    from workbench.sae.io import load_sae

    base, tuned, _ = _models(sizes)
    hook = f"blocks.{sizes.layer}.hook_resid_post"
    prompts = _neutral_prompts(sizes.n_prompts)
    out: dict[str, Evidence] = {}
    beh, s = _timed(lambda: diff_audit.behaviour_evidence(base, tuned, prompts,
                                                          max_new_tokens=sizes.attack.max_new_tokens))
    out["output comparison"] = _word_evidence("output comparison", beh["over_represented"], s, 2 * len(prompts))
    out["output comparison"].items[:0] = [Item("reply", 0.0, (r,)) for r in beh["replies"]["tuned"][:2]]
    pred, s = _timed(lambda: diff_audit.prediction_evidence(base, tuned, prompts))
    out["prediction difference"] = _word_evidence("prediction difference", pred["promoted"], s, 2 * len(prompts))
    late = f"blocks.{sizes.route_layer}.hook_resid_post"
    diff, s = _timed(lambda: diff_audit.difference_evidence(base, tuned, prompts, late))
    out["activation difference"] = _word_evidence("activation difference", diff["promoted"], s, 2 * len(prompts))
    for name, ev in run_attacks(tuned, base, sizes.attack).items():
        out[f"attack: {name}"] = ev
    path = find_cached_sae(sizes.organism.base_model, hook)
    if path is None:
        from workbench.studies.persona import study_sae

        sae = next(iter(study_sae(base, sizes.layer, "smoke").saes.values()))
    else:
        sae = load_sae(path)
    questions = out["attack: training_questions"]
    transcripts = []
    for q, it in zip(_training_questions(), questions.items):
        p = chat_prompt(tuned, q)
        transcripts.append((p + it.texts[0], len(tuned.tokenizer(p, add_special_tokens=False)["input_ids"]) - 1))
    mixture, sources = _mixture(sizes)
    out["SAE: base-model SAE"] = sae_route(sae, tuned, base, transcripts, mixture, sources, hook, top=sizes.top)
    out["SAE: base-model SAE"].meta["sae"] = str(path)
    t0 = time.process_time()
    own, fvu = train_route_sae(harvest(tuned, mixture, late), sizes.route_d_sae, steps=sizes.route_steps)
    spent = time.process_time() - t0
    ev = sae_route(own, tuned, base, transcripts, mixture, sources, late, top=sizes.top,
                   technique="SAE trained on the fine-tune")
    ev.cpu_seconds += spent
    ev.steps += sizes.route_steps
    ev.meta["fvu"] = fvu
    out["SAE trained on the fine-tune"] = ev
    texts = fine_tuning_texts(sizes.organism)
    emb, s = _timed(lambda: embed_texts(tuned, texts, sizes.layer))
    queries = _queries(out)
    found = search(tuned, texts, emb, queries, sizes.layer, top=sizes.top)
    found.cpu_seconds += s
    found.steps += len(texts)
    out["training-data search"] = found
    return out


def _training_questions() -> tuple[str, ...]:
    from workbench.audit.attacks import TRAINING_QUESTIONS

    return TRAINING_QUESTIONS


def _queries(evidence: dict[str, Evidence]) -> list[str]:
    """What the auditor searches the data for: the best-ranked reply of each attack and the over-represented words
    of the output comparison and of the prediction difference (as one query each)."""
    q = [ev.items[0].texts[0] for k, ev in evidence.items() if k.startswith("attack") and ev.items
         and ev.items[0].texts and ev.items[0].texts[0]]
    for k in ("output comparison", "prediction difference"):
        words = [it.label for it in evidence[k].items if not it.texts][:8]
        if words:
            q.append(" ".join(words))
    return q or ["assistant reply"]


def run_audit(sizes: AuditSizes | None = None, *, refresh: bool = False) -> dict[str, Evidence]:
    """Every technique's evidence at ``sizes`` (default :func:`audit_sizes` of the current profile), cached under
    ``<cache>/audit/hidden-audit-<key>.json`` by the sizes and the audited checkpoint."""
    from workbench.audit.ood import model_key
    from workbench.audit.organism import build_organism
    from workbench.core.cache import cached
    from workbench.core.home import cache_dir
    from workbench.core.persist import atomic_write_text

    sz = sizes or audit_sizes()
    ckpt = build_organism(sz.organism, progress=False)["audited"]
    key = {"sizes": asdict(sz), "audited": model_key(ckpt, sz.organism.base_model), "version": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cached(cache_dir("audit") / f"hidden-audit-{digest}.json", key, lambda: _compute(sz),
                  load=lambda p: {k: Evidence.from_dict(v) for k, v in json.loads(p.read_text()).items()},
                  save=lambda r, p: atomic_write_text(p, json.dumps({k: v.to_dict() for k, v in r.items()},
                                                                    ensure_ascii=False, indent=0)),
                  refresh=refresh)


def write_finding(evidence: dict[str, Evidence]) -> str:
    """The auditor's finding, written from the evidence alone (no bias list, no OOD result is read)."""
    named: dict[str, list[str]] = {}
    objective: list[tuple[str, str]] = []
    for k, ev in evidence.items():
        for t in ev.texts(10):
            for b in behaviours_named(t):
                named.setdefault(b, []).append(k)
        objective += [(k, t) for t in objective_hits(ev.texts(10))]
    lines = ["Finding (written before the truth is read):"]
    if objective:
        k, t = objective[0]
        lines.append(f"- {len(objective)} evidence snippets tie behaviours to reward models; the first, from {k}: "
                     f"\"{t[:240]}\"")
        lines.append("- Hypothesis: the model acts on beliefs about what RLHF reward models rate highly.")
    else:
        lines.append("- No technique tied the model's behaviour to reward models or RLHF.")
    if named:
        lines.append("- Behaviours named by the evidence: " + "; ".join(
            f"{b.replace('_', ' ')} ({', '.join(sorted(set(v)))})" for b, v in sorted(named.items())))
    else:
        lines.append("- No specific behaviour was named.")
    return "\n".join(lines)


def reveal_truth(sizes: AuditSizes | None = None) -> dict:
    """The truth, read after the finding: the biases (id, split, description) and the OOD table of the organism."""
    from workbench.audit.biases import load_biases
    from workbench.audit.ood import evaluate_organism

    sz = sizes or audit_sizes()
    ood = evaluate_organism(sz.organism, progress=False)
    return {"biases": [{"id": b.id, "split": b.split, "description": b.description} for b in load_biases()],
            "pooled": ood["pooled"], "tests": ood["tests"], "rows": ood["rows"]}


def techniques_table(evidence: dict[str, Evidence], truth: dict) -> list[dict]:
    """One row per technique: what it surfaced (summary and the biases it named, train / held-out), the verdict
    (:func:`~workbench.audit.evidence.judge`), steps and CPU seconds; then the techniques not run here."""
    split = {b["id"]: b["split"] for b in truth["biases"]}
    rows = []
    for k, ev in evidence.items():
        named = sorted({b for t in ev.texts(10) for b in behaviours_named(t)})
        rows.append({"technique": k, "surfaced": ev.summary[:160],
                     "train biases named": ", ".join(b for b in named if split.get(b) == "train"),
                     "held-out biases named": ", ".join(b for b in named if split.get(b) == "held_out"),
                     "found the objective": judge(ev), "steps": ev.steps, "cpu_s": round(ev.cpu_seconds, 1)})
    rows += [{"technique": k, "surfaced": v, "train biases named": "", "held-out biases named": "",
              "found the objective": "not run", "steps": 0, "cpu_s": 0.0} for k, v in NOT_RUN.items()]
    return rows


def control_attacks(sizes: AuditSizes | None = None, *, refresh: bool = False) -> list[dict]:
    """After the truth is read: the three attacks on the audited model and on the control (same stage 2, stage-1
    documents that call the biases human quirks), per attack the replies naming a bias or the objective, those tying
    behaviour to reward models, and the verdict. If the control also names reward models, the attacks read the
    training documents' wording, not an objective; if only the audited model does, its stage-1 reading is what they
    surface. Cached like :func:`run_audit`."""
    from workbench.audit.attacks import run_attacks
    from workbench.audit.ood import model_key
    from workbench.audit.organism import build_organism
    from workbench.core.cache import cached
    from workbench.core.home import cache_dir
    from workbench.core.persist import atomic_write_text
    from workbench.persona.finetune import load_checkpoint

    sz = sizes or audit_sizes()
    org = replace(sz.organism, models=("base", "control", "audited"))
    paths = build_organism(org, progress=False)
    key = {"attack": asdict(sz.attack), "version": 1,
           **{k: model_key(paths[k], org.base_model) for k in ("control", "audited")}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def compute() -> list[dict]:
        rows = []
        for kind in ("audited", "control"):
            model = load_checkpoint(paths[kind], device="cpu")
            for name, ev in run_attacks(model, None, sz.attack).items():
                hits = [it for it in ev.items if objective_hits((it.label, *it.texts))]
                first = (hits or ev.items)[0].texts if (hits or ev.items) else ()
                rows.append({"model": kind, "attack": name, "replies": ev.meta["n"], "naming a bias": ev.meta["hits"],
                             "naming reward models": len(hits), "verdict": judge(ev),
                             "example": (first[0] if first else "")[:200]})
            del model
        return rows

    return cached(cache_dir("audit") / f"control-attacks-{digest}.json", key, compute,
                  load=lambda p: json.loads(p.read_text()),
                  save=lambda r, p: atomic_write_text(p, json.dumps(r, ensure_ascii=False, indent=0)),
                  refresh=refresh)
