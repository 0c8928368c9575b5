"""Runs the HTTP backend + journal over N requests; the SIGKILL test kills it mid-way and reruns it."""

import sys

from upath import UPath

from viscon_dagster.core.models.request import Request
from viscon_dagster.resources.models import OpenAIHTTPBackend

base_url, journal_url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
backend = OpenAIHTTPBackend(model="gpt-4o-mini", base_url=base_url, api_key="sk-test", max_concurrency=4)
out = backend.generate([Request.user(f"caption {i}") for i in range(n)], journal_dir=UPath(journal_url))
assert all(r.ok for r in out) and [r.text for r in out] == [f"echo: caption {i}" for i in range(n)]
print("sent", sum(not r.cached for r in out), "journaled", sum(r.cached for r in out), flush=True)
