"""The autoencoder family: core (config, networks, loading), train, evaluate."""
