"""The classifier family: core (config, networks, loading), train, evaluate."""
