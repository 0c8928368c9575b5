"""What the demo and the tests run on offline: the seeded OBELICS-format sample corpus, its prose, and the tiny
random-weight models with a locally trained tokenizer. Not part of the pipeline's domain."""
