"""Adapters at the edge: videoprune inside other tools (lmms-eval). Nothing in the core imports them."""
