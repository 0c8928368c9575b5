"""Stages 4–8, the chain built once for every caption model: page context, prompts, caption and Q&A rows,
leakage, question dedup, image samples and conversation mixes."""
