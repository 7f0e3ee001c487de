"""Keyword search: an SQLite FTS5 table over item texts (titles, descriptions, captions) and their
textual metadata (SKU, brand, category...), ranked by BM25.

The table is created by the named schema migration ``002_keyword_fts``, which also fills it from the
items an older index already holds. Triggers on ``items`` keep it in step with every insert, update
and delete inside the writer's own transactions, so keyword results can never disagree with the
metadata store, whatever code path writes it.
"""

from __future__ import annotations

import re
from typing import Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

FTS_TABLE = "items_fts"
# Textual metadata values are searchable too (SKU, brand, category, a photo's place and camera...), and
# the texts in list values (a photo's tags), except bookkeeping fields.
_NOT_SEARCHED = "('manifest', 'role')"
_BODY = (
    "coalesce({row}.text, '') || ' ' || coalesce((SELECT group_concat(value, ' ') FROM json_tree({row}.meta) "
    f"WHERE type = 'text' AND (path != '$' OR key NOT IN {_NOT_SEARCHED})), '')"
)
_MAX_TERMS = 32


def reindex_list_values(conn: Connection) -> None:
    """Migration ``004_keyword_lists``: the keyword index also holds the texts of list values (a photo's
    XMP/IPTC tags); its triggers are made again with that body and every item is indexed again."""
    if conn.dialect.name == "sqlite":
        for trigger in ("items_fts_insert", "items_fts_update"):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
    create_keyword_index(conn)


def create_keyword_index(conn: Connection) -> None:
    """Migration ``002_keyword_fts``: the FTS5 table, its sync triggers, and a backfill of existing items
    (on PostgreSQL: a tsvector table instead, see ``mmsearch.storage.postgres.keyword``)."""
    if conn.dialect.name == "postgresql":
        from mmsearch.storage.postgres import keyword as keyword_pg

        keyword_pg.create_keyword_index(conn)
        return
    conn.execute(text(f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')"))
    new_body = _BODY.format(row="NEW")
    conn.execute(text(
        f"CREATE TRIGGER IF NOT EXISTS items_fts_insert AFTER INSERT ON items BEGIN "
        f"INSERT INTO {FTS_TABLE}(rowid, body) VALUES (NEW.id, {new_body}); END"
    ))
    conn.execute(text(
        f"CREATE TRIGGER IF NOT EXISTS items_fts_update AFTER UPDATE OF text, meta, id ON items BEGIN "
        f"DELETE FROM {FTS_TABLE} WHERE rowid = OLD.id; "
        f"INSERT INTO {FTS_TABLE}(rowid, body) VALUES (NEW.id, {new_body}); END"
    ))
    conn.execute(text(
        f"CREATE TRIGGER IF NOT EXISTS items_fts_delete AFTER DELETE ON items BEGIN "
        f"DELETE FROM {FTS_TABLE} WHERE rowid = OLD.id; END"
    ))
    conn.execute(text(f"DELETE FROM {FTS_TABLE}"))
    conn.execute(text(f"INSERT INTO {FTS_TABLE}(rowid, body) SELECT items.id, {_BODY.format(row='items')} FROM items"))


def match_expression(query: str) -> str | None:
    """A user's words as a safe FTS5 query: each word a quoted phrase, any of them may match (BM25 ranks
    items matching more and rarer words first). ``SKU-00123`` stays one phrase, so it matches exactly.
    -> None when the query has no searchable word."""
    words = query_words(query)
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def query_words(query: str) -> list[str]:
    """The searchable words of a query (at most ``_MAX_TERMS``): whitespace-separated, with a letter or digit."""
    return [w for w in query.split() if re.search(r"\w", w)][:_MAX_TERMS]


def keyword_ranking(conn: Connection, query: str, candidate_sql: str, params: dict, limit: int) -> list[tuple[int, float]]:
    """-> [(item id, BM25 score, higher is better)] best first, among the items ``candidate_sql`` selects."""
    expression = match_expression(query)
    if expression is None or limit <= 0:
        return []
    if conn.dialect.name == "postgresql":
        from mmsearch.storage.postgres import keyword as keyword_pg

        return keyword_pg.keyword_ranking(conn, query_words(query), candidate_sql, params, limit)
    rows = conn.execute(
        text(
            # Matches first (materialized), then the filter: letting SQLite drive the FTS lookup from the
            # candidate ids instead is orders of magnitude slower on a large index.
            f"WITH m AS MATERIALIZED (SELECT rowid AS id, bm25({FTS_TABLE}) AS rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_query) "
            f"SELECT m.id, m.rank FROM m WHERE m.id IN ({candidate_sql}) ORDER BY m.rank, m.id LIMIT :fts_limit"
        ),
        {**params, "fts_query": expression, "fts_limit": int(limit)},
    ).all()
    return [(int(item_id), -float(rank)) for item_id, rank in rows]


def keyword_matches(conn: Connection, queries: Sequence[str], candidate_sql: str, params: dict) -> set[int]:
    """Ids of candidate items matching any word of any of ``queries`` (used to push negative terms down)."""
    found: set[int] = set()
    for query in queries:
        expression = match_expression(query)
        if expression is None:
            continue
        if conn.dialect.name == "postgresql":
            from mmsearch.storage.postgres import keyword as keyword_pg

            found.update(keyword_pg.keyword_matches(conn, query_words(query), candidate_sql, params))
            continue
        rows = conn.execute(
            text(f"WITH m AS MATERIALIZED (SELECT rowid AS id FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_query) "
                 f"SELECT m.id FROM m WHERE m.id IN ({candidate_sql})"),
            {**params, "fts_query": expression},
        )
        found.update(int(r[0]) for r in rows)
    return found


SNIPPET_CHARS = 120
_WORD = re.compile(r"\w+")


def snippet(text: str | None, query: str, width: int = SNIPPET_CHARS) -> str | None:
    """The line of ``text`` (e.g. the text read in an image) that holds the most of the query's words, cut
    to about ``width`` characters around its first match; None when no query word is in it. Words match
    as the keyword index matches them: whole words, case and accents aside."""
    wanted = {w.casefold() for w in _WORD.findall(query or "")}
    if not text or not wanted:
        return None
    best, best_count = None, 0
    for line in text.splitlines():
        count = sum(w.casefold() in wanted for w in _WORD.findall(line))
        if count > best_count:
            best, best_count = line.strip(), count
    if best is None:
        return None
    if len(best) <= width:
        return best
    first = next(m.start() for m in _WORD.finditer(best) if m.group().casefold() in wanted)
    start = max(0, min(first - width // 3, len(best) - width))
    return ("..." if start else "") + best[start : start + width].strip() + ("..." if start + width < len(best) else "")
