"""kiln: a DVC-orchestrated image ML workflow (crawl, filter, split, augment, train, evaluate)."""
__version__ = "0.1.0"
