"""Study orchestration the notebooks call: run profiles and the study SAEs they share, standard and nested sizes
(``profile``), scaling-law sweeps (``sweeps``), the completeness and multilingual case studies (``completeness``,
``multilingual``) and the demo (``demo``)."""
