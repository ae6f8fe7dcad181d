"""The one list of the notebook views: every :class:`widgets.view.View` subclass, what it shows, and where the
browser test's gallery builds one. ``widgets/__init__.py`` exports these names, ``tests/browser/gallery.py`` and
``tests/browser/lab.py`` build and show one of each, ``tests/test_browser.py`` renders and drives each, and
``tests/test_widget_registry.py`` checks that the README names exactly these classes. Adding a view means adding it
here (and a builder to the gallery, an interaction to the browser test).

    from widgets.registry import VIEWS, find
    [v.name for v in VIEWS]          # ["FeatureCard", "FeatureBrowser", ...]
    find("DiffExplorer").load()      # the class (imports its module)

Pure data: importing this module imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

__all__ = ["VIEWS", "ViewSpec", "exports", "find", "get", "names"]


@dataclass(frozen=True)
class ViewSpec:
    """One view. ``module``: its module within ``widgets``; ``gallery``: the key of its builder in
    ``tests/browser/gallery.py`` (``gallery.BUILDERS[key]``) and of its cell in the gallery notebook; ``extras``:
    helpers of the same module that ``widgets`` exports too."""

    name: str
    module: str
    description: str
    gallery: str
    extras: tuple[str, ...] = ()

    def load(self) -> type:
        """The class (imports its module)."""
        return getattr(import_module(self.module, "widgets"), self.name)


VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("FeatureCard", ".feature_card", "one feature: top examples, activation histogram (click a bar to list "
             "its bucket), logit effects", "card", ("histogram_figure",)),
    ViewSpec("FeatureBrowser", ".feature_browser", "search, sort and page through an SAE's features; pick one to "
             "open its card", "browser"),
    ViewSpec("PromptInspector", ".prompt_inspector", "which features fire on a prompt: token x feature heatmap, "
             "a token's own top features", "inspector", ("heatmap_figure",)),
    ViewSpec("NeighborhoodMap", ".neighborhood_map", "joint UMAP of several SAEs' decoder directions: colour, "
             "search, zoom, click a point for its card", "map"),
    ViewSpec("SplitExplorer", ".split_explorer", "feature splitting: one family across dictionary sizes as a graph "
             "and side-by-side examples", "splits"),
    ViewSpec("ScalingView", ".scaling_view", "scaling-law plots of a sweep and the table of fitted exponents, per "
             "metric", "scaling"),
    ViewSpec("LanguageHeatmap", ".language_heatmap", "language x feature heatmap of one parallel probe group; pick "
             "a feature for its card", "languages"),
    ViewSpec("AttributionView", ".attribution_view", "token x feature attribution to a metric; ablate a cell and "
             "see the new predictions", "attribution"),
    ViewSpec("SteeringPlayground", ".steering_playground", "steer a model with one feature: search, strength, "
             "method, unsteered vs steered generations", "steering"),
    ViewSpec("PersonaMonitor", ".persona_monitor", "a persona trait in a conversation: per-token projection, a "
             "steering coefficient, the closest SAE features", "persona"),
    ViewSpec("DiffExplorer", ".diff_explorer", "model diffing with a crosscoder: relative decoder norms, Latent "
             "Scaling, both models' cards and a steering check", "diff"),
    ViewSpec("SDMBetaView", ".sdm_beta_view", "attention heads read as SDM: each head's beta against the optimal "
             "band; a head's softmax vs SDM read weights", "sdm_beta", ("beta_figure",)),
    ViewSpec("ContinualView", ".sdm_continual_view", "class-incremental learning curves of the SDMLP, its ablations "
             "and the baselines; final accuracies", "sdm_continual"),
)


def names() -> list[str]:
    """The views' class names, in the registry's order."""
    return [v.name for v in VIEWS]


def find(name: str) -> ViewSpec | None:
    """The entry of class ``name``, or None."""
    return next((v for v in VIEWS if v.name == name), None)


def get(name: str) -> ViewSpec:
    """The entry of class ``name``; ValueError naming the registered views otherwise."""
    spec = find(name)
    if spec is None:
        raise ValueError(f"no view named {name!r}: the registry holds {', '.join(names())} (widgets/registry.py)")
    return spec


def exports() -> dict[str, str]:
    """Name -> relative module, for ``widgets``' lazy exports: each view and its extras."""
    out: dict[str, str] = {}
    for v in VIEWS:
        out[v.name] = v.module
        out.update({extra: v.module for extra in v.extras})
    return out
