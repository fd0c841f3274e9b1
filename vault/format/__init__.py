"""Pure byte formats: crypto, sealing, packs, index, chunker, trees. May import storage and base."""
