"""Materialization metadata shared by every asset: schema, row count, a markdown preview."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def preview(table: pa.Table, columns: list[str], rows: int = 5, max_chars: int = 80) -> dg.MetadataValue:
    def cell(v: Any) -> str:
        s = str(v).replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in head]
    return dg.MetadataValue.md("\n".join(lines))


def as_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values as they are; dicts and lists as JSON metadata (Dagster renders them as trees)."""
    return {k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in values.items()}


def status_counts(table: pa.Table, column: str = "status") -> dict[str, int]:
    counts = table.group_by(column).aggregate([([], "count_all")]).to_pylist()
    return {str(r[column]): r["count_all"] for r in counts}


def table_metadata(table: pa.Table, preview_columns: list[str]) -> dict[str, Any]:
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": column_schema(table.schema),
        "preview": preview(table, preview_columns),
    }
