"""Running Dagster on this machine, for the `viscon` command and the demo: the instance (`instance.py`), the
code location and its GraphQL (`workspace.py`), a `dagster-daemon` (`daemon.py`), backfills (`backfills.py`) and
shard registration (`shards.py`). Plain functions; `cli.py` is only their command line."""
