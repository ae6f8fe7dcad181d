"""Reading trained dictionaries: the feature pass (``features``; its results, codes cache and kernels in
``feature_results``, ``feature_codes``, ``feature_kernels``), logit effects, search, explanations and their held-out
scores (``explain``, ``explain_llm``), the interpretability ``scorecard``, features vs neurons, neighbourhoods and
maps, splitting across sizes, scaling-law fits (``scaling``, ``powerlaw``), completeness (``completeness``,
``concepts``, ``sigmoid_fit``) and multilingual statistics (``multilingual``, ``multilingual_probes``)."""
