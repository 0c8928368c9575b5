"""Stages 1–2: OBELICS records parsed and validated, one shard filtered to the documents worth captioning."""
