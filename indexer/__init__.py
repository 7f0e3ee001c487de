"""The indexing pipeline: scan (sources) -> decode/preprocess (loader) -> encode -> write (writer)."""
