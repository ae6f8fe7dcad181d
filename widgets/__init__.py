"""ipywidgets + plotly views of workbench analyses; each also renders to static HTML (``to_html()``).

    from widgets import FeatureBrowser, FeatureCard, PromptInspector, NeighborhoodMap, SteeringPlayground

Every view is a :class:`widgets.view.View` (one widget contract) and is listed once, in
:mod:`widgets.registry` (``widgets.VIEWS``), which these exports follow. Views are imported on first use, so
``import widgets`` stays cheap (the map pulls in umap/numba, the attribution view the model code).
"""
import workbench  # noqa: F401  (cheap: installs the aliases of the 0.1 paths, such as widgets.html)
from workbench.core.lazy import lazy_exports

from .registry import VIEWS, ViewSpec, exports  # noqa: F401  (re-exported through __all__)

_EXPORTS = {**exports(), "View": ".view"}

__all__ = sorted([*_EXPORTS, "VIEWS", "ViewSpec"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
