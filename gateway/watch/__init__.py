"""Watchers on the journal: supervision, duty and shifts, patrols and the calendar, the clock."""
