"""Logic that watches the frame stream and the clock: supervision, duty, patrols."""
