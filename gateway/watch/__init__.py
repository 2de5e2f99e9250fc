"""Watchers on the journal: unit supervision, guard duty and shifts, the gateway's clock."""
