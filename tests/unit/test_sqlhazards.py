"""The session-state classifier on a corpus: what breaks under transaction pooling, and what only looks like it."""

from __future__ import annotations

import pytest

from connbench.sqlhazards import KINDS, classify, example

S, C, A, L, T, H, P = ("set_session", "set_config_session", "advisory_lock_session", "listen", "temp_table",
                       "cursor_with_hold", "prepare")
CORPUS: list[tuple[str, set[str]]] = [
    # SET and RESET: session-wide unless LOCAL (or transaction-scoped by nature)
    ("SET statement_timeout = 5000", {S}),
    ("set statement_timeout to '5s'", {S}),
    ("SET SESSION statement_timeout = 1", {S}),
    ("SET search_path TO app, public", {S}),
    ("SET TIME ZONE 'UTC'", {S}),
    ("SET ROLE reporting", {S}),
    ("SET SESSION AUTHORIZATION alice", {S}),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", {S}),
    ("RESET statement_timeout", {S}),
    ("RESET ALL", {S}),
    ("SET LOCAL statement_timeout = 5000", set()),
    ("set local search_path to app", set()),
    ("SET LOCAL ROLE reporting", set()),
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", set()),
    ("SET CONSTRAINTS ALL DEFERRED", set()),
    ("  \n\tSeT   application_name = 'x'", {S}),
    # set_config: the third argument decides
    ("SELECT set_config('app.user', '42', false)", {C}),
    ("select SET_CONFIG('app.user', '42', FALSE)", {C}),
    ("SELECT set_config('app.user', '42', true)", set()),
    ("SELECT set_config('app.user', '42', TRUE)", set()),
    ("SELECT set_config('app.user', %s, false)", {C}),
    ("SELECT set_config('app.user', %s, %s)", {C}),  # a placeholder may be false
    ("SELECT set_config('a', concat('b', 'c'), true)", set()),
    ("SELECT set_config('a', concat('b', 'c'), false)", {C}),
    ("SELECT current_setting('app.user')", set()),
    # advisory locks: session-level versus transaction-level
    ("SELECT pg_advisory_lock(42)", {A}),
    ("SELECT pg_advisory_lock(1, 2)", {A}),
    ("SELECT pg_try_advisory_lock(%s)", {A}),
    ("SELECT pg_advisory_lock_shared(7)", {A}),
    ("SELECT pg_try_advisory_lock_shared(7)", {A}),
    ("SELECT pg_advisory_unlock(42)", {A}),
    ("SELECT pg_advisory_unlock_all()", {A}),
    ("SELECT pg_advisory_xact_lock(42)", set()),
    ("SELECT pg_try_advisory_xact_lock(42)", set()),
    ("SELECT pg_advisory_xact_lock_shared(42)", set()),
    ("SELECT * FROM pg_locks WHERE locktype = 'advisory'", set()),
    # LISTEN, temporary tables, held cursors, prepared statements
    ("LISTEN jobs", {L}),
    ("UNLISTEN *", {L}),
    ("NOTIFY jobs, 'x'", set()),
    ("SELECT pg_notify('jobs', 'x')", set()),
    ("CREATE TEMP TABLE scratch (id int)", {T}),
    ("CREATE TEMPORARY TABLE scratch AS SELECT 1", {T}),
    ("create local temporary table scratch (id int)", {T}),
    ("CREATE GLOBAL TEMP TABLE scratch (id int)", {T}),
    ("CREATE TEMP TABLE scratch (id int) ON COMMIT DROP", set()),
    ("SELECT id INTO TEMP scratch FROM items", {T}),
    ("CREATE TABLE tempdata (id int)", set()),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", {H}),
    ('DECLARE "_django_curs_1" NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM items', {H}),
    ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", set()),
    ("DECLARE c CURSOR FOR SELECT 1", set()),
    ("PREPARE q (int) AS SELECT $1", {P}),
    ("DEALLOCATE q", {P}),
    ("EXECUTE q(1)", set()),
    ("PREPARE TRANSACTION 'tx1'", set()),
    # keywords inside comments, strings and names never match
    ("-- SET statement_timeout = 0\nSELECT 1", set()),
    ("/* LISTEN x; SET y = 1 */ SELECT 1", set()),
    ("/* a comment */ SET statement_timeout = 0", {S}),
    ("SELECT 'SET statement_timeout = 0'", set()),
    ("SELECT 'pg_advisory_lock(1)'", set()),
    ("SELECT E'it\\'s; SET x = 1'", set()),
    ("SELECT $$ LISTEN x $$", set()),
    ("SELECT $body$ ; PREPARE p AS SELECT 1 $body$", set()),
    ('SELECT "set", "listen" FROM "prepare"', set()),
    ("SELECT 'a'';SET x=1'", set()),
    ("SELECT 1 -- ; SET x = 1", set()),
    ("SELECT 'unclosed; SET x = 1", set()),
    # multi-statement strings
    ("SELECT 1; SET search_path TO x", {S}),
    ("SET LOCAL a = 1; SET b = 2", {S}),
    ("LISTEN a; SELECT pg_advisory_lock(1); PREPARE p AS SELECT 1", {L, A, P}),
    ("BEGIN; SET LOCAL a = 1; COMMIT;", set()),
    # what an ORM sends
    ('SELECT "bench_item"."id", "bench_item"."name" FROM "bench_item" WHERE "bench_item"."id" = %s LIMIT 21', set()),
    ('SELECT "t"."id" FROM "t" ORDER BY "t"."id" ASC LIMIT 10 OFFSET 20', set()),
    ('UPDATE "bench_item" SET "value" = %s WHERE "bench_item"."id" = %s', set()),
    ('INSERT INTO "settings" ("key", "value") VALUES (%s, %s)', set()),
    ("SELECT offset_seconds, settings FROM prepared_reports", set()),
    ("WITH x AS (SELECT 1) SELECT * FROM x", set()),
    ("", set()),
]


def test_the_corpus_is_large_enough_and_covers_every_sql_kind() -> None:
    assert len(CORPUS) >= 60
    kinds = set().union(*(want for _, want in CORPUS))
    assert kinds == set(KINDS) - {"server_side_cursor"}  # read from Django's cursor, never from SQL


@pytest.mark.parametrize(("sql", "want"), CORPUS, ids=[f"{i:02d}" for i in range(len(CORPUS))])
def test_classify(sql: str, want: set[str]) -> None:
    assert classify(sql) == frozenset(want)


def test_every_kind_says_why_and_how_to_fix() -> None:
    for kind, h in KINDS.items():
        assert h.kind == kind and h.title and len(h.why) > 30 and len(h.fix) > 15


def test_example_drops_literals_and_comments_and_is_bounded() -> None:
    assert example("SET password_hint = 'hunter2' -- the admin's\n") == "SET password_hint = ?"
    assert example("SELECT set_config('app.token', 'abc123', false)") == "SELECT set_config(?, ?, false)"
    assert example("SELECT pg_advisory_lock(424242)") == "SELECT pg_advisory_lock(?)"
    assert example('SELECT "col2" FROM t2 WHERE x = $q$secret$q$') == 'SELECT "col2" FROM t2 WHERE x = ?'
    assert example("SELECT 'unclosed secret") == "SELECT ?"
    long = example("SELECT " + ", ".join(f"c{i}" for i in range(200)))
    assert len(long) == 200 and long.endswith("…")
    assert example("SELECT\n   1,\t\t2") == "SELECT ?, ?"
