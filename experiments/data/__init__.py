"""Cohort tables → model inputs: participants with labels, best-blow curves, embeddings, prediction tables."""
