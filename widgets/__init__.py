"""ipywidgets + plotly views of workbench analyses; each also renders to static HTML (``to_html()``).

    from widgets import FeatureBrowser, FeatureCard, PromptInspector, NeighborhoodMap, SteeringPlayground

Views are imported on first use, so ``import widgets`` stays cheap (the map pulls in umap/numba, the
attribution view the model code).
"""
import workbench  # noqa: F401  (cheap: installs the aliases of the 0.1 paths, such as widgets.html)
from workbench.core.lazy import lazy_exports

_VIEWS = {
    "FeatureCard": ".feature_card", "histogram_figure": ".feature_card",
    "FeatureBrowser": ".feature_browser",
    "PromptInspector": ".prompt_inspector", "heatmap_figure": ".prompt_inspector",
    "NeighborhoodMap": ".neighborhood_map",
    "SplitExplorer": ".split_explorer",
    "ScalingView": ".scaling_view",
    "LanguageHeatmap": ".language_heatmap",
    "AttributionView": ".attribution_view",
    "SteeringPlayground": ".steering_playground",
    "PersonaMonitor": ".persona_monitor",
    "DiffExplorer": ".diff_explorer",
}

__all__ = sorted(_VIEWS)


__getattr__, __dir__ = lazy_exports(__name__, _VIEWS)
