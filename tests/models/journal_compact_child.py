"""A process sharing one pay-once journal with others (the compaction race test).

    journal_compact_child.py writer ROOT TAG N     put N answers, compacting after every 4th
    journal_compact_child.py loader ROOT STOPFILE  load until STOPFILE exists; exit 1 if an answer seen once
                                                   is missing from a later load
$JOURNAL_CHILD_OPTIONS (JSON) are the fsspec options of ROOT, e.g. an S3 endpoint.
"""

import json
import os
import sys

from upath import UPath

from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Response

root = UPath(sys.argv[2], **json.loads(os.environ.get("JOURNAL_CHILD_OPTIONS", "{}")))
if sys.argv[1] == "writer":
    tag, n = sys.argv[3], int(sys.argv[4])
    journal = Journal(root)
    folded = 0
    for i in range(n):
        journal.put(Response(fingerprint=f"{tag}-{i}", model="m", backend="b", status="ok", text=f"{tag} {i}"))
        if i % 4 == 3:
            folded += journal.compact()
    folded += journal.compact()
    print("folded", folded, flush=True)
else:
    stop, seen, loads = sys.argv[3], set(), 0
    while True:
        last = os.path.exists(stop)  # one more load after the writers are done
        entries = Journal(root).load()
        loads += 1
        if lost := seen - set(entries):
            print("lost", sorted(lost)[:5], "after", loads, "loads", flush=True)
            sys.exit(1)
        seen |= set(entries)
        if last:
            break
    print("loads", loads, "entries", len(seen), flush=True)
