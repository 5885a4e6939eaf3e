"""HeLM on a frozen LLM: training settings, data module, Lightning module, training and scoring."""
