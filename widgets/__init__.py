"""ipywidgets + plotly views of workbench analyses; each also renders to static HTML (``to_html()``).

    from widgets import FeatureBrowser, FeatureCard, PromptInspector
"""
from .feature_browser import FeatureBrowser
from .feature_card import FeatureCard, histogram_figure
from .prompt_inspector import PromptInspector, heatmap_figure

__all__ = ["FeatureBrowser", "FeatureCard", "PromptInspector", "heatmap_figure", "histogram_figure"]
