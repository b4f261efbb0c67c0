"""Memory policy (VRAM tiers), component offload and memory-safe fallbacks."""
