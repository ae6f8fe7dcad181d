"""Running the model with features changed: seeded hooked generation (``generation``), steering by clamping,
decoder directions and diff-of-means (``steering``), attribution checked against ablation (``attribution``)."""
