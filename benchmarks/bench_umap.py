"""Joint feature map of 30k decoder vectors: workbench's layout against umap-learn used as documented.

Prints one JSON object:

* ``workbench``: :func:`workbench.analysis.neighborhoods.joint_layout` end to end on ``--n`` vectors (d=``--d``), split
  into three "SAEs" of 1/14, 4/14 and 9/14 of the points: one exact cosine kNN graph (torch, chunked matrix
  products) shared by the 2-d map and the 10-d UMAP, then HDBSCAN. Stage times from ``layout.config["timings"]``.
* ``baseline``: the same two UMAPs written the plain way, ``umap.UMAP(metric="cosine", ...)``, each fit running
  its own approximate kNN search (NN-descent), then the same HDBSCAN. Same UMAP settings and seed.
* ``speedup`` = baseline seconds / workbench seconds, both measured here in the same run, after a small warm-up
  of each path (numba compiles on first use; the warm-up times are reported apart); ``speedup_cpu`` the same for
  the CPU seconds of this process, which a shared machine's other jobs disturb much less than wall-clock time
  (``load_average_1min`` is sampled before, between and after). ``nndescent_recall``: the fraction of the exact
  15 nearest neighbours the baseline's search found.

The vectors are "random-ish decoder rows": ``--concepts`` random directions, each point a concept plus isotropic
noise (concept weight 0.6), unit-normalised, so the map has clusters to find.

    python benchmarks/bench_umap.py [--n 30000] [--d 640] [--threads 2] [--no-baseline]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--d", type=int, default=640)
    ap.add_argument("--concepts", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="time only the workbench layout")
    return ap.parse_args()


def main() -> None:
    args = parse()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import numba
    import numpy as np
    import torch

    from workbench.analysis.neighborhoods import LayoutConfig, joint_layout, knn_graph, unit_directions

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.concepts, args.d, generator=gen)
    concept = torch.randint(0, args.concepts, (args.n,), generator=gen)
    x = unit_directions(0.6 * unit_directions(centres)[concept]
                        + 0.8 * unit_directions(torch.randn(args.n, args.d, generator=gen)))
    cuts = [0, args.n // 14, args.n * 5 // 14, args.n]
    saes = {f"sae-{i}": x[a:b] for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))}
    cfg = LayoutConfig(progress=False)
    out: dict = {"n": args.n, "d": args.d, "concepts": args.concepts, "threads": args.threads,
                 "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                 "umap_settings": {"n_neighbors": cfg.n_neighbors, "min_dist": cfg.resolved_min_dist(len(saes)),
                                   "metric": "cosine", "cluster_components": cfg.cluster_components,
                                   "min_cluster_size": cfg.min_cluster_size, "random_state": cfg.random_state}}

    # warm-up: numba compiles UMAP's optimiser (both paths) and NN-descent (baseline) on first use
    small = {k: v[:300] for k, v in saes.items()}
    t = time.perf_counter()
    joint_layout(small, config=cfg)
    out["warmup_workbench_s"] = round(time.perf_counter() - t, 2)

    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    layout = joint_layout(saes, config=cfg)
    ours, ours_cpu = time.perf_counter() - t, time.process_time() - c
    out["workbench"] = {"total_s": round(ours, 2), "cpu_s": round(ours_cpu, 2), **layout.config["timings"],
                        "clusters": layout.n_clusters,
                        "unclustered": round(float((layout.cluster < 0).mean()), 3)}
    out["load_average_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]

    if not args.no_baseline:
        import umap
        from sklearn.cluster import HDBSCAN

        def plain(points, n_components):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reducer = umap.UMAP(n_neighbors=cfg.n_neighbors, n_components=n_components, metric="cosine",
                                    min_dist=cfg.resolved_min_dist(len(saes)), random_state=cfg.random_state)
                emb = reducer.fit_transform(points)
            return emb, reducer

        pts = x.numpy()
        t = time.perf_counter()
        plain(pts[:4500], 2)  # above 4096 points, so NN-descent compiles too
        out["warmup_baseline_s"] = round(time.perf_counter() - t, 2)
        t, c = time.perf_counter(), time.process_time()
        _, r2 = plain(pts, 2)
        t2 = time.perf_counter()
        emb10, _ = plain(pts, cfg.cluster_components)
        t10 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            labels = HDBSCAN(min_cluster_size=cfg.min_cluster_size).fit_predict(emb10)
        t_end = time.perf_counter()
        base, base_cpu = t_end - t, time.process_time() - c
        approx = getattr(r2, "_knn_indices", None)  # set where umap-learn ran NN-descent (n >= 4096)
        recall = None
        if approx is not None:
            exact, _ = knn_graph(x, cfg.n_neighbors)
            recall = round(float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact.numpy(), approx)])),
                           4)
        out["baseline"] = {"total_s": round(base, 2), "cpu_s": round(base_cpu, 2), "umap_2d_s": round(t2 - t, 2),
                           f"umap_{cfg.cluster_components}d_s": round(t10 - t2, 2),
                           "hdbscan_s": round(t_end - t10, 2), "clusters": int(labels.max() + 1),
                           "nndescent_recall": recall}
        out["speedup"] = round(base / ours, 2)
        out["speedup_cpu"] = round(base_cpu / ours_cpu, 2)
        out["load_average_1min"].append(round(os.getloadavg()[0], 2))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
