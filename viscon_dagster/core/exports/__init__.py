"""Stage 9: the release (`release.py`) and its formats: LLaVA JSON, Idefics/HF parquet, the dataset card,
the train/test split, storage helpers and the HTML preview."""
