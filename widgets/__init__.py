"""ipywidgets + plotly views of workbench analyses; each also renders to static HTML (``to_html()``).

    from widgets import FeatureBrowser, FeatureCard, PromptInspector, NeighborhoodMap, SteeringPlayground

Views are imported on first use, so ``import widgets`` stays cheap (the map pulls in umap/numba, the
attribution view the model code).
"""
from importlib import import_module

_VIEWS = {
    "FeatureCard": "feature_card", "histogram_figure": "feature_card",
    "FeatureBrowser": "feature_browser",
    "PromptInspector": "prompt_inspector", "heatmap_figure": "prompt_inspector",
    "NeighborhoodMap": "neighborhood_map",
    "SplitExplorer": "split_explorer",
    "ScalingView": "scaling_view",
    "LanguageHeatmap": "language_heatmap",
    "AttributionView": "attribution_view",
    "SteeringPlayground": "steering_playground",
}

__all__ = sorted(_VIEWS)


def __getattr__(name: str):
    if name not in _VIEWS:
        raise AttributeError(f"module 'widgets' has no attribute {name!r}; views: {', '.join(__all__)}")
    return getattr(import_module(f".{_VIEWS[name]}", __name__), name)
