"""Storage backends of the memory service, behind one small interface."""
