"""Processes launched by assets (through Dagster Pipes), e.g. the captioner's training run."""
