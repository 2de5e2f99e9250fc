"""The simulation: virtual units, fleets, brokers and clusters on one machine."""
