"""Feature neighbourhoods: decoder-cosine neighbours, a joint UMAP map of several SAEs, and labelled clusters.

    from workbench.analysis.neighborhoods import LayoutConfig, joint_layout, label_clusters, nearest_neighbors
    saes = {"topk-1024": small, "topk-4096": mid, "topk-16384": large}       # trained on the same activations
    nearest_neighbors(saes, "topk-1024", 12, k=10)          # within that SAE and across the others, by cosine
    layout = joint_layout(saes, cache_dir="runs/x/neighborhoods")           # cached: a rerun is one npz read
    layout.cluster_labels = label_clusters(layout, explanations=expl, results=results)

The methods follow Towards / Scaling Monosemanticity (docs/methods.md §6):

- A feature's direction is its decoder row; two features are close when their decoder rows have a high cosine.
  Dead or all-zero rows have no direction (cosine 0 with everything).
- The map is a UMAP (umap-learn) of the unit decoder rows with ``metric="cosine"``, ``n_neighbors=15`` and
  ``min_dist=0.05`` for one SAE, ``0.01`` for a joint map of several.
- Clusters are HDBSCAN (scikit-learn, ``min_cluster_size=3``) on a second, 10-d UMAP of the same points; each
  cluster is labelled by the tokens its members' explanations name most often (else their top tokens).

Speed: both UMAPs share one exact k-nearest-neighbour graph, computed once by chunked matrix products in torch
(cosine is a dot product of unit rows), instead of each fit running its own approximate search
(``benchmarks/bench_umap.py`` measures the difference on 30k vectors).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.analysis.features import sae_fingerprint
from workbench.core.persist import atomic_write, read_tagged_json, write_tagged_json

__all__ = [
    "FeatureLayout",
    "LayoutConfig",
    "Neighbor",
    "cosine_matrix",
    "directions_fingerprint",
    "joint_layout",
    "knn_graph",
    "label_clusters",
    "member_terms",
    "nearest_neighbors",
    "unit_directions",
]

LAYOUT_FORMAT = "workbench-feature-layout"
LAYOUT_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Decoder directions and cosines (pure functions on tensors)
# ----------------------------------------------------------------------------------------------------------------


def unit_directions(sae_or_matrix: Any) -> Tensor:
    """The decoder rows [d_sae, d_model] of an SAE (or a matrix of row vectors), scaled to unit norm, float32 CPU.

    Rows of zero norm stay zero, so they have cosine 0 with everything."""
    w = getattr(sae_or_matrix, "W_dec", sae_or_matrix)
    if isinstance(w, np.ndarray):
        w = torch.from_numpy(w)
    if not isinstance(w, Tensor) or w.dim() != 2:
        shape = tuple(w.shape) if hasattr(w, "shape") else type(w).__name__
        raise ValueError(f"expected an SAE (with W_dec) or a [n, d_model] matrix of directions, got {shape}")
    w = w.detach().to("cpu", torch.float32)
    norm = w.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, w / norm.clamp_min(1e-30), torch.zeros_like(w))


def cosine_matrix(a: Any, b: Any) -> Tensor:
    """Cosine similarities [n_a, n_b] between the rows of ``a`` and ``b`` (SAEs or matrices with equal widths)."""
    ua, ub = unit_directions(a), unit_directions(b)
    if ua.shape[1] != ub.shape[1]:
        raise ValueError(f"d_model mismatch: directions of width {ua.shape[1]} and {ub.shape[1]} cannot be compared; "
                         f"use SAEs trained on the same model and hook")
    return ua @ ub.T


def knn_graph(directions: Tensor, k: int, *, chunk: int = 2048, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Exact k nearest neighbours by cosine of the rows of ``directions`` (unit rows), self included first.

    Returns (indices [n, k] int64, cosines [n, k] float32), each row sorted by decreasing cosine, computed by
    chunked matrix products (memory ``chunk * n`` floats)."""
    n = directions.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} neighbours needs 1 <= k <= the number of points ({n})")
    idx = torch.empty((n, k), dtype=torch.int64)
    sim = torch.empty((n, k), dtype=torch.float32)
    arange = torch.arange(n)
    for s in tqdm(range(0, n, chunk), desc="kNN", disable=not progress, leave=False):
        block = directions[s:s + chunk] @ directions.T
        rows = arange[s:s + chunk]
        block[torch.arange(rows.numel()), rows] = 2.0  # each point is its own first neighbour (cosine > any other)
        v, i = block.topk(k, dim=1)
        idx[s:s + chunk], sim[s:s + chunk] = i, v.clamp_max(1.0)
    return idx, sim


@dataclass
class Neighbor:
    """A feature near the query: which SAE, which feature, and the cosine of their decoder rows."""

    sae: str
    feature: int
    cosine: float


def _check_feature(name: str, feature: Any, d_sae: int) -> int:
    if isinstance(feature, Tensor) and feature.numel() == 1:
        feature = int(feature)
    if isinstance(feature, (bool, np.bool_)) or not isinstance(feature, (int, np.integer)):
        raise ValueError(f"feature index must be an integer, got {feature!r}")
    if not 0 <= int(feature) < d_sae:
        raise ValueError(f"feature index {feature} out of range [0, {d_sae}) for SAE {name!r}")
    return int(feature)


def nearest_neighbors(saes: Mapping[str, Any], sae: str, feature: int, k: int = 10, *,
                      among: Sequence[str] | None = None, per_sae: bool = False) -> list[Neighbor]:
    """The ``k`` features whose decoder rows have the highest cosine with ``saes[sae]``'s ``feature``.

    ``saes`` maps names to SAEs (or direction matrices) trained on the same activations; ``among`` picks the SAEs
    searched (default all, the query's own SAE included, the query itself excluded). ``per_sae=True`` returns the
    top ``k`` of each searched SAE instead of the top ``k`` overall. Zero (never trained) rows are skipped."""
    if sae not in saes:
        raise ValueError(f"unknown SAE {sae!r}: choose one of {', '.join(saes)}")
    among = list(saes) if among is None else list(among)
    unknown = [n for n in among if n not in saes]
    if unknown:
        raise ValueError(f"unknown SAE(s) {unknown}: choose among {', '.join(saes)}")
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    query_dirs = unit_directions(saes[sae])
    q = query_dirs[_check_feature(sae, feature, query_dirs.shape[0])]
    found: list[Neighbor] = []
    for name in among:
        dirs = unit_directions(saes[name])
        if dirs.shape[1] != q.shape[0]:
            raise ValueError(f"d_model mismatch: SAE {name!r} has directions of width {dirs.shape[1]} but {sae!r} "
                             f"has {q.shape[0]}; compare SAEs trained on the same model and hook")
        cos = dirs @ q
        cos[dirs.norm(dim=1) == 0] = float("-inf")
        if name == sae:
            cos[int(feature)] = float("-inf")
        m = min(k, int(torch.isfinite(cos).sum()))
        v, i = cos.topk(m)
        found += [Neighbor(name, int(j), float(c)) for c, j in zip(v, i)]
    if per_sae:
        return found
    found.sort(key=lambda nb: -nb.cosine)
    return found[:k]


# ----------------------------------------------------------------------------------------------------------------
# The joint layout
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutConfig:
    """Settings of the map and its clusters (defaults: the Towards Monosemanticity settings, docs/methods.md §6).

    ``min_dist`` None: 0.05 for one SAE, 0.01 for a joint map of several. ``cluster_components``: the dimension of
    the UMAP that HDBSCAN clusters (0: no clustering). ``random_state``: fixed for a reproducible map (umap-learn
    then runs its optimisation on one thread); None lets it use every numba thread, faster and not reproducible.
    """

    n_neighbors: int = 15
    min_dist: float | None = None
    metric: str = "cosine"
    n_epochs: int | None = None
    cluster_components: int = 10
    min_cluster_size: int = 3
    random_state: int | None = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if self.metric != "cosine":
            raise ValueError(f"metric {self.metric!r} is not supported: the layout compares decoder directions by "
                             f"cosine (metric='cosine')")
        if self.min_dist is not None and not 0 <= self.min_dist <= 1:
            raise ValueError(f"min_dist must lie in [0, 1], got {self.min_dist}")
        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be at least 2, got {self.min_cluster_size}")
        if self.cluster_components < 0:
            raise ValueError(f"cluster_components must be >= 0, got {self.cluster_components}")

    def resolved_min_dist(self, n_saes: int) -> float:
        if self.min_dist is not None:
            return float(self.min_dist)
        return 0.01 if n_saes > 1 else 0.05

    def key_dict(self) -> dict:
        """The settings that change the layout (not ``progress``)."""
        return {k: v for k, v in asdict(self).items() if k != "progress"}


def directions_fingerprint(sae_or_matrix: Any) -> str:
    """sha256 of an SAE's config and weights (:func:`workbench.analysis.features.sae_fingerprint`) or of a matrix's bytes."""
    if hasattr(sae_or_matrix, "cfg") and hasattr(sae_or_matrix, "state_dict"):

        return sae_fingerprint(sae_or_matrix)
    w = unit_directions(sae_or_matrix).contiguous()
    return hashlib.sha256(str(tuple(w.shape)).encode() + w.numpy().tobytes()).hexdigest()


@dataclass
class FeatureLayout:
    """Points of a joint map: point ``p`` is feature ``feature[p]`` of SAE ``sae_names[sae[p]]``.

    ``xy`` [n, 2] the map; ``embedding`` [n, c] the higher-dimensional UMAP the clusters come from; ``cluster``
    [n] (-1: noise, no cluster); ``knn`` / ``knn_cosine`` [n, k] each point's nearest points by decoder cosine (the
    first is the point itself); ``cluster_labels``: cluster -> label (:func:`label_clusters`); ``config``: the
    settings used, with the seconds each stage took under ``"timings"``."""

    sae_names: list[str]
    sae: np.ndarray
    feature: np.ndarray
    xy: np.ndarray
    embedding: np.ndarray
    cluster: np.ndarray
    knn: np.ndarray
    knn_cosine: np.ndarray
    config: dict = field(default_factory=dict)
    key: str = ""
    cluster_labels: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.feature.shape[0])

    def __repr__(self) -> str:
        n_clusters = len(set(self.cluster.tolist()) - {-1})
        return (f"FeatureLayout({len(self)} points from {self.sae_names}, {n_clusters} clusters, "
                f"{float((self.cluster < 0).mean()) if len(self) else 0:.0%} unclustered)")

    @property
    def n_clusters(self) -> int:
        return len(set(self.cluster.tolist()) - {-1})

    def point(self, sae: str, feature: int) -> int:
        """The index of ``sae``'s ``feature`` among the points (ValueError if it is not on the map)."""
        if sae not in self.sae_names:
            raise ValueError(f"unknown SAE {sae!r}: the map holds {', '.join(self.sae_names)}")
        s = self.sae_names.index(sae)
        hit = np.nonzero((self.sae == s) & (self.feature == int(feature)))[0]
        if hit.size == 0:
            raise ValueError(f"feature {feature} of {sae!r} is not on the map (out of range, or left out as dead)")
        return int(hit[0])

    def label(self, p: int) -> tuple[str, int]:
        """(SAE name, feature) of point ``p``."""
        return self.sae_names[int(self.sae[p])], int(self.feature[p])

    def neighbors(self, sae: str, feature: int, k: int | None = None) -> list[Neighbor]:
        """The point's nearest other points on the map (any SAE), by decoder cosine (from the stored kNN graph)."""
        p = self.point(sae, feature)
        out = [Neighbor(*self.label(q), float(c)) for q, c in zip(self.knn[p], self.knn_cosine[p]) if q != p]
        return out if k is None else out[:k]

    def members(self, cluster: int) -> list[tuple[str, int]]:
        """(SAE, feature) of the points of ``cluster``."""
        return [self.label(int(p)) for p in np.nonzero(self.cluster == int(cluster))[0]]

    def cluster_of(self, sae: str, feature: int) -> int:
        return int(self.cluster[self.point(sae, feature)])

    def cluster_sizes(self) -> dict[int, int]:
        """Cluster -> number of points, largest first (noise excluded)."""
        counts = Counter(int(c) for c in self.cluster.tolist() if c >= 0)
        return dict(counts.most_common())

    # ----- persistence (npz + json, no pickle) -----

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        stem = d / f"layout-{self.key or 'unkeyed'}"
        arrays: dict[str, Any] = dict(sae=self.sae, feature=self.feature, xy=self.xy, embedding=self.embedding,
                                      cluster=self.cluster, knn=self.knn, knn_cosine=self.knn_cosine)

        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temporary name
                np.savez(fh, **arrays)

        atomic_write(stem.with_suffix(".npz"), write_npz)
        write_tagged_json(stem.with_suffix(".json"),
                          {"sae_names": self.sae_names, "config": self.config, "key": self.key,
                           "cluster_labels": {str(c): t for c, t in self.cluster_labels.items()}},
                          format=LAYOUT_FORMAT, format_version=LAYOUT_VERSION, indent=1)
        return stem.with_suffix(".npz")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureLayout":
        """Open a saved layout (the ``.npz`` or its ``.json``); ValueError naming the file if it is unreadable."""
        path = Path(path)
        npz, meta_path = path.with_suffix(".npz"), path.with_suffix(".json")
        fix = f"delete {npz} and {meta_path} and lay out again"
        meta = read_tagged_json(meta_path, format=LAYOUT_FORMAT, what="a saved feature layout", fix=fix,
                                max_version=LAYOUT_VERSION)
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("sae", "feature", "xy", "embedding", "cluster", "knn", "knn_cosine")}
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"saved layout {npz} is missing or corrupt ({type(err).__name__}: {err}): {fix}") from None
        n = arrays["feature"].shape[0]
        if any(a.shape[0] != n for a in arrays.values()):
            raise ValueError(f"saved layout {npz} has arrays of different lengths: {fix}")
        return cls(sae_names=list(meta["sae_names"]), config=dict(meta.get("config", {})), key=str(meta.get("key", "")),
                   cluster_labels={int(c): str(t) for c, t in meta.get("cluster_labels", {}).items()}, **arrays)


def _umap(directions: np.ndarray, knn: tuple[np.ndarray, np.ndarray], n_components: int, min_dist: float,
          cfg: LayoutConfig) -> np.ndarray:
    import umap

    n = directions.shape[0]
    if n <= n_components + 1:  # too few points for a spectral embedding: spread them deterministically
        return np.eye(n, n_components, dtype=np.float32)
    with warnings.catch_warnings():
        # a precomputed graph without an NNDescent index only disables .transform(), which we never call;
        # n_jobs is overridden to 1 when random_state is set
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        reducer = umap.UMAP(n_neighbors=min(cfg.n_neighbors, n - 1), n_components=n_components, metric="cosine",
                            min_dist=min_dist, n_epochs=cfg.n_epochs, random_state=cfg.random_state,
                            precomputed_knn=knn, init="spectral" if n > n_components + 2 else "random",
                            verbose=False, tqdm_kwds={"disable": True})
        return np.asarray(reducer.fit_transform(directions), dtype=np.float32)


def _cluster(embedding: np.ndarray, min_cluster_size: int) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    n = embedding.shape[0]
    if n < min_cluster_size:
        return np.full(n, -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn's "copy" default is changing; we pass a fresh array
        labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(embedding)
    return labels.astype(np.int64)


def _selected(dirs: Mapping[str, Tensor], features: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    out = {}
    for name, d in dirs.items():
        n = d.shape[0]
        if features is None or name not in features or features[name] is None:
            sel = np.arange(n)
        else:
            raw = features[name]
            sel = np.asarray(raw.cpu() if isinstance(raw, Tensor) else raw, dtype=np.int64).reshape(-1)
            if sel.size and (sel.min() < 0 or sel.max() >= n):
                raise ValueError(f"features[{name!r}] holds indices outside [0, {n}) (SAE {name!r} has {n} features)")
            sel = np.unique(sel)
        out[name] = sel
    return out


def joint_layout(saes: Mapping[str, Any], features: Mapping[str, Any] | None = None,
                 config: LayoutConfig | None = None, *, cache_dir: str | Path | None = None) -> FeatureLayout:
    """A UMAP map of the decoder rows of every SAE in ``saes`` (name -> SAE or [n, d] directions), with clusters.

    ``features`` (name -> indices) restricts an SAE to some features (e.g. ``results.alive()``); zero rows are
    always left out. With ``cache_dir`` the layout is saved there as ``layout-<key>.npz/.json``, the key a hash of
    the SAEs' weights, the selected features and the settings, and a later call with the same inputs loads it.
    """
    cfg = config or LayoutConfig()
    if not saes:
        raise ValueError("no SAE to lay out: pass a mapping name -> SAE")
    names = list(saes)
    all_dirs = {name: unit_directions(saes[name]) for name in names}
    widths = {name: d.shape[1] for name, d in all_dirs.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"d_model mismatch between the SAEs {widths}: a joint map needs SAEs trained on the same "
                         f"activations (same model and hook)")
    chosen = _selected(all_dirs, features)
    parts, sae_ids, feats = [], [], []
    for s, name in enumerate(names):
        dirs = all_dirs[name][torch.from_numpy(chosen[name])]
        keep = (dirs.norm(dim=1) > 0).numpy()
        parts.append(dirs[torch.from_numpy(keep)])
        sae_ids.append(np.full(int(keep.sum()), s, dtype=np.int64))
        feats.append(chosen[name][keep])
    sae_idx, feature = np.concatenate(sae_ids), np.concatenate(feats).astype(np.int64)
    n = feature.shape[0]
    if n < 2:
        raise ValueError(f"only {n} feature(s) with a non-zero decoder row to lay out: a map needs at least 2")

    key_src = {"saes": [[name, directions_fingerprint(saes[name]),
                         hashlib.sha256(chosen[name].tobytes()).hexdigest()] for name in names],
               "config": cfg.key_dict(), "version": LAYOUT_VERSION}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    if cache_dir is not None:
        cached = Path(cache_dir) / f"layout-{key}.npz"
        if cached.is_file():
            try:
                return FeatureLayout.load(cached)
            except ValueError:
                pass  # corrupt: lay out again and overwrite

    dirs = torch.cat(parts)
    k = min(cfg.n_neighbors, n)
    timings: dict[str, float] = {}
    bar = tqdm(total=4, desc="layout", disable=not cfg.progress, leave=False)

    def stage(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        timings[name] = round(t1 - t0, 3)
        bar.update(1)
        return t1

    t = time.perf_counter()
    knn_idx, knn_cos = knn_graph(dirs, k)
    t = stage("knn_s", t)
    # umap-learn wants cosine *distances*; each point is its own first neighbour at distance 0
    knn = (knn_idx.numpy(), (1.0 - knn_cos).clamp_min(0).numpy().astype(np.float32))
    x = dirs.numpy()
    min_dist = cfg.resolved_min_dist(len(names))
    xy = _umap(x, knn, 2, min_dist, cfg)
    t = stage("umap_2d_s", t)
    if cfg.cluster_components > 0:
        emb = _umap(x, knn, cfg.cluster_components, min_dist, cfg)
        t = stage(f"umap_{cfg.cluster_components}d_s", t)
        cluster = _cluster(emb, cfg.min_cluster_size)
        stage("hdbscan_s", t)
    else:
        emb, cluster = np.zeros((n, 0), dtype=np.float32), np.full(n, -1, dtype=np.int64)
    bar.close()
    layout = FeatureLayout(sae_names=names, sae=sae_idx, feature=feature, xy=xy, embedding=emb, cluster=cluster,
                           knn=knn_idx.numpy(), knn_cosine=knn_cos.numpy(),
                           config={**cfg.key_dict(), "min_dist": min_dist, "timings": timings}, key=key)
    if cache_dir is not None:
        layout.save(cache_dir)
    return layout


# ----------------------------------------------------------------------------------------------------------------
# Cluster labels
# ----------------------------------------------------------------------------------------------------------------

def _explanation_terms(unit: Any) -> list[str]:
    """The token strings an explanation names: TokenExplainer's ``pattern_strings``, else the quoted parts of its
    text, else the whole text."""
    expl = getattr(unit, "explanation", unit)
    meta = getattr(expl, "meta", None) or {}
    terms = meta.get("pattern_strings") or meta.get("key_tokens")
    if terms:
        return [str(t) for t in terms]
    text = getattr(expl, "text", expl)
    if not isinstance(text, str):
        return []
    quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return [json.loads(f'"{q}"') if "\\" in q else q for q in quoted] or ([text] if not text.startswith("(") else [])


def _peak_text(ex) -> str:
    """The text at an example's peak; a peak inside a byte-split character (its text is on the run's first token,
    see :func:`workbench.data.token_text.spell_tokens`) names the whole character."""
    j = ex.index
    while j > 0 and ex.tokens[j] == "" and ex.token_ids[j] >= 0 and ex.token_ids[j - 1] >= 0:
        j -= 1
    return ex.tokens[j]


def member_terms(sae: str, feature: int, *, explanations: Mapping[str, Any] | None = None,
                 results: Mapping[str, Any] | None = None, n_top: int = 5) -> list[str]:
    """What one feature is about, as a few strings: its explanation's tokens when there is one, else the tokens at
    the peak of its top ``n_top`` examples (from its :class:`~workbench.analysis.features.FeatureResults`)."""
    expl = (explanations or {}).get(sae)
    if expl is not None and feature in expl:
        terms = _explanation_terms(expl[feature])
        if terms:
            return terms
    res = (results or {}).get(sae)
    if res is not None:
        return [_peak_text(ex) for ex in res.top_examples(feature)[:n_top] if 0 <= ex.index < len(ex.tokens)]
    return []


def label_clusters(layout: FeatureLayout, *, explanations: Mapping[str, Any] | None = None,
                   results: Mapping[str, Any] | None = None, n_terms: int = 3) -> dict[int, str]:
    """A label per cluster: the ``n_terms`` strings its members name most often (see :func:`member_terms`; each
    member counts a string once), with how many members name each, e.g. ``'" Paris" (4), " France" (2)'``.

    ``explanations`` / ``results``: SAE name -> ExplanationSet (or mapping feature -> explanation) / FeatureResults.
    Clusters whose members say nothing get ``"(no explanations)"``. Also stored in ``layout.cluster_labels``."""
    if explanations is None and results is None:
        raise ValueError("labels need explanations= (name -> ExplanationSet) or results= (name -> FeatureResults)")
    labels: dict[int, str] = {}
    for c in sorted(set(layout.cluster.tolist()) - {-1}):
        counts: Counter[str] = Counter()
        for name, f in layout.members(c):
            terms = {t.strip().lower() for t in member_terms(name, f, explanations=explanations, results=results)}
            counts.update(t for t in terms if t)
        top = counts.most_common(n_terms)
        labels[c] = ", ".join(f"{json.dumps(t, ensure_ascii=False)} ({m})" for t, m in top) if top \
            else "(no explanations)"
    layout.cluster_labels = labels
    return labels
