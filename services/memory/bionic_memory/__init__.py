"""BionicMemory."""
