"""SIA DC-09 to alarm receiving centres: frames, durable queue, feed, transmitter, wiring."""
