"""Feature splitting across dictionary sizes: nested SAEs on identical activations, matched by decoder cosine and
by activation correlation, grouped into split families (with merges), larger-SAE latents classified as refinements
or novel concepts.

    from workbench.analysis.splitting import SplitConfig, analyze_splitting
    from workbench.studies.profile import nested_saes
    nested = nested_saes(sizes=(1024, 4096, 16384))           # one training pass, cached under the profile's runs
    split = analyze_splitting(nested.saes, nested.heldout())    # held-out tokens of the same store
    split.families()[0]                                         # the small-SAE feature with the most children
    split.novelty("topk-16384-k32")                             # refinement / novel / silent per latent

Methods (docs/methods.md §7):

- **Nested sizes, one pass.** :func:`workbench.studies.profile.train_nested` trains every size with
  :func:`workbench.sae.train.train`, so all SAEs see exactly the same batches in the same order.
- **Matching.** For a smaller SAE A and a larger SAE B: the cosine of every pair of decoder rows, and the Pearson
  correlation of every pair of activations over held-out tokens (exact, from the SAEs' sparse codes:
  ``sum_t a_i(t) b_j(t)`` by sparse-dense products, never a dense [tokens, d_sae] matrix).
- **Families.** A feature of the smallest SAE is a *parent*; a latent of a larger SAE is its *child* when their
  decoder cosine is at least ``threshold`` (``by="cosine"``, the default), or their activation correlation at least
  ``corr_threshold`` (``by="correlation"``), or both (``by="both"``). Refinement is not a tree: a child may pass
  the test for several parents, and is then listed in each family as a **merge**.
- **Refinement vs novel.** A larger-SAE latent whose best decoder cosine to the reference (smaller) SAE is at least
  ``threshold`` refines some feature; below it, it is a novel concept. Latents that never fire on the held-out
  tokens are reported as ``silent`` (dead latents keep near-random decoder rows, which would look novel).
- **Partition statistics.** On the held-out tokens where the parent fires: the fraction each child covers, the
  fraction some child covers (union), the fraction two or more children cover (overlap), and for each child the
  fraction of its own firing tokens that lie inside the parent's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.analysis.explain import explanation_text
from workbench.analysis.feature_kernels import sparse_encode
from workbench.analysis.neighborhoods import cosine_matrix

__all__ = [
    "FamilyMember",
    "SizeMatch",
    "SplitAnalysis",
    "SplitConfig",
    "SplitEdge",
    "SplitFamily",
    "TokenCodes",
    "activation_correlation",
    "analyze_splitting",
    "heldout_codes",
    "match_sizes",
]


# ----------------------------------------------------------------------------------------------------------------
# Sparse codes on held-out tokens, and activation correlations
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TokenCodes:
    """The non-zero activations of one SAE on ``n_tokens`` tokens: entry e is feature ``feats[e]`` firing with
    ``vals[e]`` on token ``rows[e]``."""

    rows: Tensor
    feats: Tensor
    vals: Tensor
    n_tokens: int
    d_sae: int
    _order: Tensor | None = field(default=None, init=False, repr=False)
    _starts: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.rows.shape == self.feats.shape == self.vals.shape) or self.rows.dim() != 1:
            raise ValueError(f"rows, feats and vals must be 1-d of one length, got {tuple(self.rows.shape)}, "
                             f"{tuple(self.feats.shape)}, {tuple(self.vals.shape)}")
        if self.feats.numel() and (int(self.feats.min()) < 0 or int(self.feats.max()) >= self.d_sae):
            raise ValueError(f"feature indices must lie in [0, {self.d_sae})")
        if self.rows.numel() and (int(self.rows.min()) < 0 or int(self.rows.max()) >= self.n_tokens):
            raise ValueError(f"token rows must lie in [0, {self.n_tokens})")

    @property
    def counts(self) -> Tensor:
        """Firing tokens per feature [d_sae]."""
        return torch.bincount(self.feats, minlength=self.d_sae)

    def firing(self, feature: int) -> Tensor:
        """The sorted token rows where ``feature`` fires."""
        if not 0 <= int(feature) < self.d_sae:
            raise ValueError(f"feature index {feature} out of range [0, {self.d_sae})")
        if self._order is None or self._starts is None:  # (computed together)
            self._order = torch.argsort(self.feats, stable=True)
            self._starts = torch.cat([torch.zeros(1, dtype=torch.int64), self.counts.cumsum(0)])
        s, e = int(self._starts[feature]), int(self._starts[feature + 1])
        return torch.sort(self.rows[self._order[s:e]]).values

    def sparse(self, lo: int = 0, hi: int | None = None, *, binary: bool = False) -> Tensor:
        """Tokens [lo, hi) as a sparse COO matrix [features, tokens] (values, or 1 where ``binary``)."""
        hi = self.n_tokens if hi is None else hi
        sel = (self.rows >= lo) & (self.rows < hi)
        vals = torch.ones(int(sel.sum())) if binary else self.vals[sel]
        idx = torch.stack([self.feats[sel], self.rows[sel] - lo])
        return torch.sparse_coo_tensor(idx, vals.to(torch.float32), (self.d_sae, hi - lo),
                                       check_invariants=False).coalesce()

    def dense(self, lo: int = 0, hi: int | None = None) -> Tensor:
        """Tokens [lo, hi) as a dense [tokens, d_sae] matrix."""
        return self.sparse(lo, hi).to_dense().T.contiguous()


def heldout_codes(saes: Mapping[str, Any], batches: Iterable[Tensor] | Tensor, *, max_tokens: int | None = None,
                  progress: bool = False) -> dict[str, TokenCodes]:
    """Encode the same activation batches (or one [n, d_model] tensor) with every SAE, sparsely."""
    if isinstance(batches, Tensor):
        if batches.dim() != 2:
            raise ValueError(f"activations must be a [n_tokens, d_model] matrix, got shape {tuple(batches.shape)}")
        batches = [batches]
    parts: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {name: [] for name in saes}
    seen = 0
    for x in tqdm(batches, desc="encode held-out", disable=not progress, leave=False):
        if max_tokens is not None and seen >= max_tokens:
            break
        if max_tokens is not None:
            x = x[: max_tokens - seen]
        for name, sae in saes.items():
            if x.shape[-1] != sae.cfg.d_in:
                raise ValueError(f"d_model mismatch: SAE {name!r} takes d_in={sae.cfg.d_in} but the activations have "
                                 f"d_model={x.shape[-1]}; encode activations of the hook the SAEs were trained on")
            r, f, v = sparse_encode(sae, x.to(sae.device, sae.dtype))
            parts[name].append((r.cpu() + seen, f.cpu(), v.cpu()))
        seen += int(x.shape[0])
    if seen == 0:
        raise ValueError("no held-out activations: the batches are empty (train with holdout_tokens > 0, or pass "
                         "activations)")
    out = {}
    for name, sae in saes.items():
        rows, feats, vals = (torch.cat([p[j] for p in parts[name]]) for j in range(3))
        out[name] = TokenCodes(rows.to(torch.int64), feats.to(torch.int64), vals.to(torch.float32), seen,
                               int(sae.cfg.d_sae))
    return out


def _cross(a: TokenCodes, b: TokenCodes, chunk: int, binary: bool) -> Tensor:
    """sum_t a_i(t) b_j(t) [d_a, d_b] (or co-firing counts where ``binary``): per chunk of tokens, b's sparse codes
    times a's dense ones (cost ~ entries of b x d_a, so pass the larger SAE as ``b``)."""
    out = torch.zeros(b.d_sae, a.d_sae, dtype=torch.float64)
    for lo in range(0, a.n_tokens, chunk):
        hi = min(a.n_tokens, lo + chunk)
        da = a.sparse(lo, hi, binary=binary).to_dense().T  # [tokens, d_a]
        out += torch.sparse.mm(b.sparse(lo, hi, binary=binary), da).to(torch.float64)
    return out.T


def activation_correlation(a: TokenCodes, b: TokenCodes, *, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Pearson correlations [d_a, d_b] of every pair of features' activations over the same tokens (0 where a
    feature never fires or is constant), and the co-firing counts [d_a, d_b] (tokens where both fire)."""
    if a.n_tokens != b.n_tokens:
        raise ValueError(f"the codes cover different tokens ({a.n_tokens} vs {b.n_tokens}): encode the same held-out "
                         f"batches with both SAEs (heldout_codes)")
    n = a.n_tokens
    cross = _cross(a, b, chunk, binary=False)
    cofire = _cross(a, b, chunk, binary=True).round().to(torch.int64)

    def moments(c: TokenCodes) -> tuple[Tensor, Tensor]:
        s = torch.zeros(c.d_sae, dtype=torch.float64).index_add_(0, c.feats, c.vals.to(torch.float64))
        q = torch.zeros(c.d_sae, dtype=torch.float64).index_add_(0, c.feats, c.vals.to(torch.float64) ** 2)
        mean = s / n
        return mean, (q / n - mean ** 2).clamp_min(0)

    mean_a, var_a = moments(a)
    mean_b, var_b = moments(b)
    cov = cross / n - mean_a[:, None] * mean_b[None, :]
    denom = (var_a[:, None] * var_b[None, :]).sqrt()
    corr = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
    return corr.clamp(-1, 1).to(torch.float32), cofire


# ----------------------------------------------------------------------------------------------------------------
# Matching two sizes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitConfig:
    """How features are matched across sizes and families are formed.

    ``threshold``: decoder cosine for a parent-child link (``by="cosine"``) and for calling a larger latent a
    refinement; ``corr_threshold``: activation correlation for a link (``by="correlation"``); ``by="both"``
    needs both. ``candidates``: the best matches kept per latent on each side (by cosine and by correlation) as
    edges (a latent linked to more than ``candidates`` parents keeps its best ones); ``edge_floor``: edges below it
    on both measures are dropped (never a link). ``max_tokens``: held-out tokens used.
    """

    threshold: float = 0.5
    corr_threshold: float = 0.3
    by: str = "cosine"
    candidates: int = 8
    edge_floor: float = 0.2
    max_tokens: int | None = None
    chunk_tokens: int = 2048
    progress: bool = False

    def __post_init__(self) -> None:
        if self.by not in ("cosine", "correlation", "both"):
            raise ValueError(f"by must be 'cosine', 'correlation' or 'both', got {self.by!r}")
        for name in ("threshold", "corr_threshold", "edge_floor"):
            if not -1 <= getattr(self, name) <= 1:
                raise ValueError(f"SplitConfig.{name} must lie in [-1, 1], got {getattr(self, name)}")
        if self.candidates < 1 or self.chunk_tokens < 1:
            raise ValueError("SplitConfig.candidates and chunk_tokens must be positive integers")

    def links(self, cosine: Tensor, correlation: Tensor) -> Tensor:
        """Whether each (cosine, correlation) pair makes a parent-child link."""
        by_cos, by_corr = cosine >= self.threshold, correlation >= self.corr_threshold
        return by_cos if self.by == "cosine" else by_corr if self.by == "correlation" else by_cos & by_corr


@dataclass
class SizeMatch:
    """Matches between a smaller SAE and a larger one.

    ``edges``: candidate pairs (``small`` [E], ``large`` [E] indices, their ``cosine``, ``correlation`` and
    ``cofire`` counts). Per larger latent: ``large_max_cos`` / ``large_best_cos`` (best decoder cosine to any
    smaller feature, and which), ``large_max_corr`` / ``large_best_corr``; per smaller feature the same with
    ``small_``."""

    small_name: str
    large_name: str
    small: Tensor
    large: Tensor
    cosine: Tensor
    correlation: Tensor
    cofire: Tensor
    large_max_cos: Tensor
    large_best_cos: Tensor
    large_max_corr: Tensor
    large_best_corr: Tensor
    small_max_cos: Tensor
    small_max_corr: Tensor


def _top_pairs(m: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Flat (row, col) pairs of the top-k columns of each row and the top-k rows of each column of ``m``."""
    kr, kc = min(k, m.shape[1]), min(k, m.shape[0])
    cols = m.topk(kr, dim=1).indices
    rows = m.topk(kc, dim=0).indices
    r = torch.cat([torch.arange(m.shape[0])[:, None].expand(-1, kr).reshape(-1), rows.reshape(-1)])
    c = torch.cat([cols.reshape(-1), torch.arange(m.shape[1])[None, :].expand(kc, -1).reshape(-1)])
    return r, c


def match_sizes(small_name: str, small_sae, small_codes: TokenCodes, large_name: str, large_sae,
                large_codes: TokenCodes, config: SplitConfig | None = None) -> SizeMatch:
    """Decoder cosines and activation correlations between every feature of a smaller and a larger SAE, reduced to
    the best matches of each feature (see :class:`SizeMatch`)."""
    cfg = config or SplitConfig()
    cos = cosine_matrix(small_sae, large_sae)
    corr, cofire = activation_correlation(small_codes, large_codes, chunk=cfg.chunk_tokens)
    r1, c1 = _top_pairs(cos, cfg.candidates)
    r2, c2 = _top_pairs(corr, cfg.candidates)
    key = torch.unique(torch.cat([r1, r2]) * cos.shape[1] + torch.cat([c1, c2]))
    r, c = key // cos.shape[1], key % cos.shape[1]
    keep = ((cos[r, c] >= min(cfg.edge_floor, cfg.threshold))
            | (corr[r, c] >= min(cfg.edge_floor, cfg.corr_threshold)))  # every link passes the floor
    r, c = r[keep], c[keep]
    lmc, lbc = cos.max(dim=0)
    lmr, lbr = corr.max(dim=0)
    return SizeMatch(small_name, large_name, r, c, cos[r, c], corr[r, c], cofire[r, c], lmc, lbc, lmr, lbr,
                     cos.max(dim=1).values, corr.max(dim=1).values)


# ----------------------------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FamilyMember:
    """A child of a split family: a latent of a larger SAE linked to the parent.

    ``coverage``: fraction of the parent's firing held-out tokens on which it fires; ``inside``: fraction of its own
    firing tokens on which the parent fires; ``parents``: every smallest-SAE feature it is linked to (more than one
    is a merge)."""

    sae: str
    feature: int
    cosine: float
    correlation: float
    coverage: float
    inside: float
    n_firing: int
    parents: list[int]

    @property
    def merged(self) -> bool:
        return len(self.parents) > 1


@dataclass
class SplitEdge:
    """A link drawn in a family: (sae_a, a) -> (sae_b, b) with their decoder cosine and activation correlation."""

    sae_a: str
    a: int
    sae_b: str
    b: int
    cosine: float
    correlation: float


@dataclass
class SplitFamily:
    """A feature of the smallest SAE and the latents of each larger SAE that refine it.

    ``union_coverage[sae]`` / ``overlap[sae]``: fraction of the parent's firing held-out tokens on which at least
    one / at least two of that size's children fire."""

    parent_sae: str
    parent: int
    n_parent_tokens: int
    children: dict[str, list[FamilyMember]]
    union_coverage: dict[str, float]
    overlap: dict[str, float]
    edges: list[SplitEdge]

    @property
    def n_children(self) -> dict[str, int]:
        return {name: len(ch) for name, ch in self.children.items()}

    @property
    def merges(self) -> list[FamilyMember]:
        """Children shared with another family."""
        return [m for ch in self.children.values() for m in ch if m.merged]

    def rows(self, explanations: Mapping[str, Any] | None = None) -> list[dict]:
        """One dict per child (for a table), with its explanation text where ``explanations`` (name ->
        ExplanationSet or mapping feature -> text) has one."""
        out = []
        for name, members in self.children.items():
            for m in members:
                out.append({"sae": name, "feature": m.feature, "cosine": round(m.cosine, 3),
                            "correlation": round(m.correlation, 3), "coverage": round(m.coverage, 3),
                            "inside": round(m.inside, 3), "n_firing": m.n_firing,
                            "merge_with": [p for p in m.parents if p != self.parent],
                            "explanation": explanation_text(explanations, name, m.feature)})
        return out



@dataclass
class SplitAnalysis:
    """Matches between every pair of sizes and the families built on them (see :func:`analyze_splitting`)."""

    names: list[str]
    sizes: list[int]
    matches: dict[tuple[str, str], SizeMatch]
    codes: dict[str, TokenCodes]
    config: SplitConfig

    @property
    def smallest(self) -> str:
        return self.names[0]

    def _check_name(self, name: str) -> str:
        if name not in self.names:
            raise ValueError(f"unknown SAE {name!r}: choose one of {', '.join(self.names)}")
        return name

    def match(self, small: str, large: str) -> SizeMatch:
        if (small, large) not in self.matches:
            raise ValueError(f"no match computed from {small!r} to {large!r}: the pairs are "
                             f"{[f'{a} -> {b}' for a, b in self.matches]}")
        return self.matches[(small, large)]

    def links(self, small: str, large: str) -> tuple[Tensor, Tensor, Tensor]:
        """(small, large, edge index) of the edges that pass the family test."""
        m = self.match(small, large)
        ok = self.config.links(m.cosine, m.correlation)
        return m.small[ok], m.large[ok], ok.nonzero().squeeze(1)

    def parents_of(self, large: str, j: int, small: str | None = None) -> list[int]:
        """The features of ``small`` (default the smallest SAE) linked to latent ``j`` of ``large``."""
        s, lg, _ = self.links(small or self.smallest, large)
        return sorted(s[lg == int(j)].tolist())

    def family(self, parent: int) -> SplitFamily:
        """The family of feature ``parent`` of the smallest SAE, with its partition statistics."""
        root = self.smallest
        d0 = self.sizes[0]
        if isinstance(parent, bool) or not 0 <= int(parent) < d0:
            raise ValueError(f"feature index {parent} out of range [0, {d0}) for the smallest SAE {root!r}")
        parent = int(parent)
        p_rows = self.codes[root].firing(parent)
        n_p = int(p_rows.numel())
        children: dict[str, list[FamilyMember]] = {}
        union_cov, overlap = {}, {}
        edges: list[SplitEdge] = []
        for name in self.names[1:]:
            m = self.match(root, name)
            s, lg, e = self.links(root, name)
            mine = (s == parent).nonzero().squeeze(1)
            members, hits = [], []
            for t in mine.tolist():
                j, ei = int(lg[t]), int(e[t])
                c_rows = self.codes[name].firing(j)
                both = torch.isin(p_rows, c_rows)
                hits.append(both)
                members.append(FamilyMember(
                    sae=name, feature=j, cosine=float(m.cosine[ei]), correlation=float(m.correlation[ei]),
                    coverage=float(both.sum()) / n_p if n_p else 0.0,
                    inside=float(both.sum()) / c_rows.numel() if c_rows.numel() else 0.0,
                    n_firing=int(c_rows.numel()), parents=sorted(s[lg == j].tolist())))
                edges.append(SplitEdge(root, parent, name, j, float(m.cosine[ei]), float(m.correlation[ei])))
            order = sorted(range(len(members)), key=lambda q: (-members[q].coverage, -members[q].cosine))
            children[name] = [members[q] for q in order]
            n_hit = torch.stack(hits).sum(0) if hits else torch.zeros(n_p, dtype=torch.int64)
            union_cov[name] = float((n_hit >= 1).sum()) / n_p if n_p else 0.0
            overlap[name] = float((n_hit >= 2).sum()) / n_p if n_p else 0.0
        # links between consecutive larger sizes, among the family's children (the refinement lattice)
        for a, b in zip(self.names[1:-1], self.names[2:]):
            if (a, b) not in self.matches:
                continue
            mab = self.matches[(a, b)]
            s, lg, e = self.links(a, b)
            ours_a = torch.tensor([m.feature for m in children[a]], dtype=torch.int64)
            ours_b = torch.tensor([m.feature for m in children[b]], dtype=torch.int64)
            sel = (torch.isin(s, ours_a) & torch.isin(lg, ours_b)).nonzero().squeeze(1)
            edges += [SplitEdge(a, int(s[t]), b, int(lg[t]), float(mab.cosine[e[t]]), float(mab.correlation[e[t]]))
                      for t in sel.tolist()]
        return SplitFamily(root, parent, n_p, children, union_cov, overlap, edges)

    def families(self, *, min_children: int = 1, size: str | None = None, alive_only: bool = True
                 ) -> list[SplitFamily]:
        """Families with at least ``min_children`` children in SAE ``size`` (default the largest), the most
        children first; ``alive_only`` skips parents that never fire on the held-out tokens."""
        size = self._check_name(size or self.names[-1])
        s, _, _ = self.links(self.smallest, size)
        n = torch.bincount(s, minlength=self.sizes[0])
        alive = self.codes[self.smallest].counts > 0
        cand = ((n >= min_children) & (alive if alive_only else torch.ones_like(alive))).nonzero().squeeze(1)
        order = sorted(cand.tolist(), key=lambda i: (-int(n[i]), i))
        return [self.family(i) for i in order]

    def novelty(self, large: str, reference: str | None = None) -> dict[str, Any]:
        """Each latent of ``large`` as "refinement" (best decoder cosine to ``reference``, default the smallest
        SAE, >= threshold), "novel" (below) or "silent" (never fires on the held-out tokens); with the best cosine,
        the reference feature it comes from, and the counts of each class."""
        reference = self._check_name(reference or self.smallest)
        m = self.match(reference, self._check_name(large))
        alive = self.codes[large].counts > 0
        refined = m.large_max_cos >= self.config.threshold
        kind = ["silent" if not a else "refinement" if r else "novel" for a, r in zip(alive.tolist(),
                                                                                        refined.tolist())]
        counts = {k: kind.count(k) for k in ("refinement", "novel", "silent")}
        return {"kind": kind, "max_cosine": m.large_max_cos, "best": m.large_best_cos,
                "max_correlation": m.large_max_corr, "counts": counts}

    def summary(self) -> list[dict]:
        """Per larger SAE: refinements / novel / silent latents, how many parents split (>= 2 children), mean
        children per alive parent, and children shared by several parents (merges)."""
        out = []
        alive_p = self.codes[self.smallest].counts > 0
        for name in self.names[1:]:
            nov = self.novelty(name)
            s, lg, _ = self.links(self.smallest, name)
            n = torch.bincount(s, minlength=self.sizes[0])[alive_p]
            merges = int((torch.bincount(lg, minlength=self.sizes[self.names.index(name)]) > 1).sum())
            out.append({"sae": name, "d_sae": self.sizes[self.names.index(name)], **nov["counts"],
                        "parents_split": int((n >= 2).sum()), "parents_with_child": int((n >= 1).sum()),
                        "mean_children": float(n.to(torch.float64).mean()) if n.numel() else 0.0,
                        "merged_children": merges})
        return out


def analyze_splitting(saes: Mapping[str, Any], heldout: Iterable[Tensor] | Tensor,
                      config: SplitConfig | None = None) -> SplitAnalysis:
    """Match every pair of SAEs (each smaller with each larger) on the same held-out activations.

    ``saes``: name -> SAE, trained on the same activations (any order; sorted by size here). ``heldout``: batches
    [n, d_model] of activations none of them was trained on (e.g. ``nested_saes().heldout()``)."""
    cfg = config or SplitConfig()
    if len(saes) < 2:
        raise ValueError(f"feature splitting needs at least two SAEs, got {len(saes)}")
    widths = {name: int(s.cfg.d_in) for name, s in saes.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"d_model mismatch between the SAEs {widths}: nested SAEs must be trained on the same "
                         f"activations")
    names = sorted(saes, key=lambda n: int(saes[n].cfg.d_sae))
    sizes = [int(saes[n].cfg.d_sae) for n in names]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"the SAEs must have distinct sizes to be nested, got {dict(zip(names, sizes))}")
    codes = heldout_codes({n: saes[n] for n in names}, heldout, max_tokens=cfg.max_tokens, progress=cfg.progress)
    matches = {}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    for a, b in tqdm(pairs, desc="match sizes", disable=not cfg.progress, leave=False):
        matches[(a, b)] = match_sizes(a, saes[a], codes[a], b, saes[b], codes[b], cfg)
    return SplitAnalysis(names, sizes, matches, codes, cfg)
