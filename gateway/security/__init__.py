"""Who may do what on the broker: signed envelopes, keys, the private CA, broker accounts."""
