"""Code shared by every BionicMemory service: domain types, gRPC clients, service plumbing."""
