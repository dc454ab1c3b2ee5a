"""POST /v1/chat/completions with memory."""
