"""The vector index: FAISS with explicit int64 ids (``index``), the choice and recall tuning of approximate
indexes (``ann``), exact re-ranking of compressed candidates (``rerank``) and device placement on GPUs
(``device``). Vectors are joined to metadata by id, never by position."""
