"""The demo corpus renderer: a tool (kiln demo) and what the crawl renders for engine local."""
