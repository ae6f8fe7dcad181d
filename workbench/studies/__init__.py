"""Study orchestration the notebooks call: run profiles and the standard SAEs they share (``profile``), the demo
(``demo``), and the case studies' drivers."""
