"""The rows an index database cannot keep: one list of rules, for checking and for repairing.

Every rule is ``(what is wrong, table, SQL condition on that table's rows)``.
:data:`DEPENDENT` rules drop photos and captions that lost what they depend on
(applied until nothing changes: dropping a photo can orphan a duplicate);
:data:`ORPHANS` then drop rows whose parent is gone. The SQL is plain and
runs on SQLite and PostgreSQL alike: the SQLite salvage
(:mod:`.doctor`) deletes the matching rows of the fresh copy, and the
PostgreSQL check (:mod:`.server_doctor`) counts them.
"""

from __future__ import annotations

from collections.abc import Callable

#: photos and captions that lost what they depend on
DEPENDENT = (
    ("indexed photos without vectors", "images",
     "status = 'indexed' AND id NOT IN (SELECT image_id FROM image_vectors)"),
    ("photos with a caption that has no chunks", "images",
     "id IN (SELECT image_id FROM captions WHERE id NOT IN (SELECT caption_id FROM caption_chunks))"),
    ("duplicates whose primary photo is not indexed", "images",
     "status = 'duplicate' AND (duplicate_of IS NULL OR duplicate_of NOT IN "
     "(SELECT id FROM images WHERE status = 'indexed'))"),
    ("captions of missing photos", "captions", "image_id NOT IN (SELECT id FROM images)"),
)
#: rows whose parent row is gone
ORPHANS = (
    ("vectors of photos that are not indexed", "image_vectors",
     "image_id NOT IN (SELECT id FROM images WHERE status = 'indexed')"),
    ("chunks of missing captions", "caption_chunks", "caption_id NOT IN (SELECT id FROM captions)"),
    ("staged vectors of missing photos", "staged_image_vectors", "image_id NOT IN (SELECT id FROM images)"),
    ("staged failures of missing photos", "staged_failures", "image_id NOT IN (SELECT id FROM images)"),
    ("staged captions of missing captions", "staged_captions", "caption_id NOT IN (SELECT id FROM captions)"),
)
#: the tables the rules need (the staged ones are skipped where absent)
CORE_TABLES = ("images", "image_vectors", "captions", "caption_chunks")


def violations(count: Callable[[str], int], has_table: Callable[[str], bool]) -> list[str]:
    """One line per broken rule: ``"3 indexed photos without vectors"``; ``count(sql)`` runs a
    ``SELECT count(*)`` and returns its value, ``has_table(name)`` tells whether a table exists."""
    out = []
    for what, table, where in (*DEPENDENT, *ORPHANS):
        if has_table(table):
            n = count(f"SELECT count(*) FROM {table} WHERE {where}")
            if n:
                out.append(f"{n} {what}")
    return out


def drop_violations(execute: Callable[[str], None], count_rows: Callable[[str], int],
                    has_table: Callable[[str], bool]) -> None:
    """Delete every row a rule rejects (``execute(sql)`` runs a statement, ``count_rows(table)``
    counts a table's rows)."""
    while True:
        n = count_rows("images")
        for _, table, where in DEPENDENT:
            execute(f"DELETE FROM {table} WHERE {where}")
        if count_rows("images") == n:
            break
    for _, table, where in ORPHANS:
        if has_table(table):
            execute(f"DELETE FROM {table} WHERE {where}")
