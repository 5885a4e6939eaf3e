"""The spirogram encoder's training code: config, data module, Lightning module, export, embeddings."""
