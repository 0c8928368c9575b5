"""A writer process for the parquet publishing tests.

    parquet_child.py hold PATH TAG ROWS     stream ROWS rows into PATH, say "writing", then wait to be killed
    parquet_child.py rewrite PATH TAG ROWS N  write PATH N times (whole tables and streamed batches in turn)

$PARQUET_CHILD_OPTIONS (JSON) are the fsspec options of PATH, e.g. an S3 endpoint.
"""

import json
import os
import sys

from upath import UPath

from tests.files.parquet_rows import SCHEMA, rows, table
from viscon_dagster.core.files.parquet import ParquetStreamWriter, write_parquet

options = json.loads(os.environ.get("PARQUET_CHILD_OPTIONS", "{}"))
mode, path, tag, n_rows = sys.argv[1], UPath(sys.argv[2], **options), sys.argv[3], int(sys.argv[4])
if mode == "hold":
    writer = ParquetStreamWriter(path, SCHEMA)
    writer.write(rows(tag, n_rows))
    print("writing", flush=True)
    sys.stdin.read()  # the test kills this process here, mid-write
elif mode == "rewrite":
    for i in range(int(sys.argv[5])):
        if i % 2:
            with ParquetStreamWriter(path, SCHEMA) as w:
                for start in range(0, n_rows, 5000):
                    w.write(rows(tag, min(5000, n_rows - start), start))
        else:
            write_parquet(table(tag, n_rows), path)
    print("done", flush=True)
