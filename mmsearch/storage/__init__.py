"""The metadata layer: everything an index keeps besides its vectors, in one room.

- ``database``: engines and connections (SQLite file per index, or PostgreSQL for shared deployments);
- ``store``: the items, their metadata and embeddings, runs and failures (schema and named migrations);
- ``indexdir``: the index directory (manifest, checksums, vector files, atomic publish);
- ``checksums``: file checksums of the manifest;
- ``filters`` (parsing) and ``filter_sql`` (their SQL), ``keyword`` (full-text search), ``fields``
  (field summaries for facets): written for SQLite, with the PostgreSQL dialect side by side in
  ``postgres/`` (``postgres.filters``, ``postgres.keyword``, ``postgres.fields``).

It imports nothing from the encoders, the search or the indexer.
"""
