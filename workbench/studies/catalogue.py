"""The feature catalogue's study: a Gemma SAE trained on wiki + Python standard library (the ``code`` profile), and
the held-out evaluation inputs built from the stdlib's held-out files (bugs planted by
:mod:`workbench.data.code_bugs`).

    study = code_sae()                         # cached under WORKBENCH_HOME/runs/gemma-3-270m-code
    bugs = heldout_bugs(n_files=20)            # Bug records from held-out stdlib files, every rule

Profiles (sized for 2 shared CPU cores): ``code`` harvests 65,536 tokens of the interleaved ``wiki+stdlib`` corpus
(about half the characters code) and trains a 4,096-latent TopK (k=32) over 4 epochs; ``code-smoke`` is CI-sized.
``WORKBENCH_PROFILE=smoke`` picks ``code-smoke``.
"""
from __future__ import annotations

import os
from dataclasses import replace

from workbench.core.protocols import ModelLike
from workbench.data.code_bugs import BUG_RULES, Bug, c_typo, corrupt, prose_typo, snippets
from workbench.data.code_corpus import code_document, code_files, is_heldout_file
from workbench.data.corpus import CorpusSpec
from workbench.studies.profile import PROFILE_ENV, Profile, StudySAEs, standard_sae

__all__ = ["CODE_CORPUS", "CODE_PROFILES", "code_profile", "code_sae", "heldout_bugs", "heldout_c_bugs", "heldout_files", "heldout_prose_typos"]

CODE_CORPUS = CorpusSpec(source="wiki+stdlib", languages=("en",))
CODE_PROFILES: dict[str, Profile] = {
    "code": Profile("code", n_tokens=65_536, holdout_tokens=4_096, batch_size=512, d_sae=4096, k=32, epochs=4,
                    checkpoint_every=50),
    "code-smoke": Profile("code-smoke", n_tokens=4_096, holdout_tokens=512, batch_size=128, d_sae=512, k=16,
                          epochs=1, checkpoint_every=0, progress=False),
}


def code_profile(name: str | None = None) -> Profile:
    """``name`` from :data:`CODE_PROFILES`; by default ``code-smoke`` under ``WORKBENCH_PROFILE=smoke``, else
    ``code``."""
    name = name or ("code-smoke" if os.environ.get(PROFILE_ENV) == "smoke" else "code")
    if name not in CODE_PROFILES:
        raise ValueError(f"unknown code profile {name!r}: choose one of {', '.join(CODE_PROFILES)}")
    return CODE_PROFILES[name]


def code_sae(model_name: str = "gemma-3-270m", *, profile: Profile | str | None = None, model: ModelLike | None = None,
             **overrides) -> StudySAEs:
    """The wiki + stdlib SAE of ``profile`` (harvested and trained once, then loaded from the cache)."""
    prof = profile if isinstance(profile, Profile) else code_profile(profile)
    prof = replace(prof, **overrides) if overrides else prof
    return standard_sae(model_name, profile=prof, model=model, corpus=CODE_CORPUS)


def heldout_files(kind: str = "py", heldout_fraction: float | None = None) -> list[int]:
    """Indices (into :func:`workbench.data.code_corpus.code_files`) of the held-out files of ``kind``."""
    frac = CODE_CORPUS.heldout_fraction if heldout_fraction is None else heldout_fraction
    return [i for i, (name, _) in enumerate(code_files(kind)) if is_heldout_file(kind, name, frac)]


def heldout_bugs(n_files: int = 20, per_file: int = 4, rules=tuple(BUG_RULES), seed: int = 0
                 ) -> tuple[list[Bug], list[str | None]]:
    """Bugs planted in function snippets of the first ``n_files`` held-out stdlib files: up to ``per_file`` snippets
    per file, every rule in ``rules`` on each (a rule that finds no place is skipped). Returns the bugs and, for
    each, the file it came from."""
    out: list[Bug] = []
    files: list[str | None] = []  # the documents' titles (a code document's is its file name)
    for i in heldout_files("py")[:n_files]:
        doc = code_document("py", i)
        for j, snip in enumerate(snippets(doc.text)[:per_file]):
            for rule in rules:
                bug = corrupt(snip, rule, seed=seed * 1000 + i * 10 + j)
                if bug is not None:
                    out.append(bug)
                    files.append(doc.title)
    return out, files


def heldout_c_bugs(n: int = 20, seed: int = 0) -> list[Bug]:
    """The typo rule on the first 1,500 characters of held-out C headers; empty (with a printed note) when the
    system has no headers."""
    try:
        idx = heldout_files("c", 0.2)
    except ValueError as err:
        print(f"[catalogue] C headers skipped: {err}")
        return []
    out = []
    for i in idx:
        bug = c_typo(code_document("c", i).text[:1500], seed=seed + i)
        if bug is not None:
            out.append(bug)
        if len(out) >= n:
            break
    return out


def heldout_prose_typos(n: int = 40, seed: int = 0) -> list[Bug]:
    """The typo rule on held-out English wiki summaries (the paper's control: a code-error feature stays off)."""
    from workbench.data.corpus import iter_documents

    out = []
    for doc in iter_documents(CorpusSpec(source="wiki", languages=("en",), split="heldout")):
        bug = prose_typo(doc.text[:600], seed=seed + doc.doc_id)
        if bug is not None:
            out.append(bug)
        if len(out) >= n:
            break
    return out
