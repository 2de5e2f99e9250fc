"""Serial links to the units: framing, the receiver of uplink frames, downlink commands."""
