"""POST /v1/embeddings, served by the embedder."""
