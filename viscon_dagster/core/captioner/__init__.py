"""The contextual captioner: training pairs, recipes, training, evaluation and the published checkpoint."""
