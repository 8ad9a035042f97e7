"""The dcgan family: core (config, networks, loading), train, evaluate."""
