"""Rows the parquet publishing tests write: a writer tag, a row number and incompressible payload."""

import os

import pyarrow as pa

SCHEMA = pa.schema([("tag", pa.string()), ("n", pa.int64()), ("payload", pa.string())])


def rows(tag: str, count: int, start: int = 0) -> list[dict]:
    return [{"tag": tag, "n": start + i, "payload": os.urandom(32).hex()} for i in range(count)]


def table(tag: str, count: int) -> pa.Table:
    return pa.Table.from_pylist(rows(tag, count), schema=SCHEMA)


def whole_from_one_writer(t: pa.Table, count: int) -> str:
    """The writer's tag, after checking `t` is one writer's complete output; raises AssertionError otherwise."""
    tags = set(t.column("tag").to_pylist())
    assert len(tags) == 1 and t.column("n").to_pylist() == list(range(count)), (tags, t.num_rows)
    return tags.pop()
