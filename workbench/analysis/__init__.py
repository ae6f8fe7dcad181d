"""Reading trained dictionaries: the feature pass (``features``, kernels in ``feature_kernels``), logit effects,
search, explanations and their held-out scores, features vs neurons, neighbourhoods and maps, splitting across
sizes, scaling-law fits, completeness and multilingual statistics."""
