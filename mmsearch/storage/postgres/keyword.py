"""Keyword search on PostgreSQL: the same contract as the SQLite FTS5 table of ``mmsearch.storage.keyword``.

``items_fts`` holds one ``tsvector`` per item (its text plus its textual metadata values, bookkeeping
fields left out), GIN-indexed, kept in step with ``items`` by a trigger inside the writer's own
transactions. Punctuation is turned into spaces on both sides before PostgreSQL's parser sees the text,
as FTS5's unicode61 tokenizer does, so ``SKU-0042`` is the phrase ``sku 0042``: an exact SKU matches its
item and not ``SKU-00420``. The ``simple`` configuration lowercases without stemming (like FTS5 here).
Ranking is ``ts_rank`` with length normalisation (the BM25 of FTS5 has no PostgreSQL counterpart); the
scores are "higher is better" like those of the SQLite path, though not the same numbers.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

FTS_TABLE = "items_fts"
_NORMALISE = "regexp_replace({}, '[[:punct:]]+', ' ', 'g')"

_VECTOR_FUNCTION = f"""
CREATE OR REPLACE FUNCTION mmsearch_fts_vector(body text, meta jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE AS $$
  SELECT to_tsvector('simple', {_NORMALISE.format(
      "coalesce(body, '') || ' ' || coalesce((SELECT string_agg(v, ' ') FROM ("
      "SELECT value #>> '{}' AS v FROM jsonb_each(meta) WHERE jsonb_typeof(value) = 'string' AND key NOT IN ('manifest', 'role') "
      "UNION ALL SELECT e #>> '{}' FROM jsonb_each(meta) AS j, "
      "jsonb_array_elements(CASE WHEN jsonb_typeof(j.value) = 'array' THEN j.value ELSE '[]'::jsonb END) AS e "
      "WHERE jsonb_typeof(e) = 'string') AS t), '')")})
$$"""

_SYNC_FUNCTION = f"""
CREATE OR REPLACE FUNCTION mmsearch_fts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM {FTS_TABLE} WHERE id = OLD.id;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO {FTS_TABLE} (id, body) VALUES (NEW.id, mmsearch_fts_vector(NEW.text, NEW.meta));
  END IF;
  RETURN NULL;
END $$"""


def create_keyword_index(conn: Connection) -> None:
    """Migration ``002_keyword_fts`` on PostgreSQL: table, GIN index, sync trigger, backfill."""
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {FTS_TABLE} (id BIGINT PRIMARY KEY, body tsvector NOT NULL)"))
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_{FTS_TABLE}_body ON {FTS_TABLE} USING GIN (body)"))
    conn.execute(text(_VECTOR_FUNCTION))
    conn.execute(text(_SYNC_FUNCTION))
    conn.execute(text(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_sync ON items"))
    conn.execute(text(
        f"CREATE TRIGGER {FTS_TABLE}_sync AFTER INSERT OR DELETE OR UPDATE OF text, meta, id ON items "
        "FOR EACH ROW EXECUTE FUNCTION mmsearch_fts_sync()"
    ))
    conn.execute(text(f"DELETE FROM {FTS_TABLE}"))
    conn.execute(text(f"INSERT INTO {FTS_TABLE} (id, body) SELECT id, mmsearch_fts_vector(text, meta) FROM items"))


def _tsquery(words: Sequence[str]) -> tuple[str, dict]:
    """Any of the words, each a phrase of its parts -> (SQL tsquery expression, its parameters)."""
    params = {f"fts_w{n}": w for n, w in enumerate(words)}
    parts = [f"phraseto_tsquery('simple', {_NORMALISE.format(':' + name)})" for name in params]
    return " || ".join(parts), params


def keyword_ranking(conn: Connection, words: Sequence[str], candidate_sql: str, params: dict, limit: int) -> list[tuple[int, float]]:
    """-> [(item id, score, higher is better)] best first, among the items ``candidate_sql`` selects."""
    query, word_params = _tsquery(words)
    rows = conn.execute(
        text(
            f"WITH m AS MATERIALIZED (SELECT f.id, ts_rank(f.body, q.query, 1) AS rank "
            f"FROM {FTS_TABLE} AS f, (SELECT {query} AS query) AS q WHERE f.body @@ q.query) "
            f"SELECT m.id, m.rank FROM m WHERE m.id IN ({candidate_sql}) ORDER BY m.rank DESC, m.id LIMIT :fts_limit"
        ),
        {**params, **word_params, "fts_limit": int(limit)},
    ).all()
    return [(int(item_id), float(rank)) for item_id, rank in rows]


def keyword_matches(conn: Connection, words: Sequence[str], candidate_sql: str, params: dict) -> set[int]:
    """Ids of candidate items matching any of the words."""
    query, word_params = _tsquery(words)
    rows = conn.execute(
        text(f"WITH m AS MATERIALIZED (SELECT f.id FROM {FTS_TABLE} AS f WHERE f.body @@ ({query})) "
             f"SELECT m.id FROM m WHERE m.id IN ({candidate_sql})"),
        {**params, **word_params},
    )
    return {int(r[0]) for r in rows}
