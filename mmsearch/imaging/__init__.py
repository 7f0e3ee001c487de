"""Pixels from files, below both the indexer and the query service: safe decoding with EXIF orientation and
a pixel cap (``decode``), the default model's PIL preprocessing (``preprocess``) and the split of a
preprocessing pipeline into a worker stage and a batch stage (``fastpath``). Readers of further formats
live here too. ``decode`` imports no torch, so a query path that only needs to open an upload stays light."""
