"""The virtual fleet: real firmware, link relays, local brokers and clusters, police, demo."""
