"""From text to activations on disk: embedded assets (``assets``), models through TransformerLens (``models``,
``chat``), corpora packed into contexts (``corpus``), hook names (``hooks``), the activation store (``store``) and
harvesting into it (``harvest``)."""
