"""The HeLM graft: serialize the tabular record into text, project spirogram embeddings into soft
tokens in a frozen causal LM's input-embedding space, and read risk as P(yes)/(P(yes)+P(no))."""
