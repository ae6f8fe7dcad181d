"""Static HTML: shared pieces (``html``), the feature card (``card``) and the one-file SAE report (``page``).

``from workbench.report import write_report`` keeps working as it did when this was one module; the page module
(which imports plotly) loads on first use.
"""
from workbench.core.lazy import lazy_exports

_PAGE = {name: ".page" for name in ("density_figure", "metrics_rows", "pick_features", "rank_features",
                                     "scorecard_figure", "scorecard_html", "write_report")}
_EXPORT = {name: ".export" for name in ("export_neuronpedia", "feature_json")}
__all__ = sorted(_PAGE) + sorted(_EXPORT)

__getattr__, __dir__ = lazy_exports(__name__, {**_PAGE, **_EXPORT})
