"""Commands around the chain, not DVC stages: the kiln CLI, classify, serve, generate."""
