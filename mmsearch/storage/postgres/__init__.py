"""Where PostgreSQL differs from SQLite: the JSONB SQL of filters, the tsvector keyword index and the
field summary. Each module keeps the contract of its SQLite counterpart in ``mmsearch.storage``."""
