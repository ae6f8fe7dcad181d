"""Foundations every layer uses: cache folders (``home``), typed configs (``config``), the persistence layer
(``persist``), hardware probes and thread control (``hardware``), shipped data tables (``resources``)."""
