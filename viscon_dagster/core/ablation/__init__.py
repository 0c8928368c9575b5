"""The paper's ablation in plain Python: the benchmark, decontamination, training rows, scoring and statistics."""
