"""The gateway service: assembly of the rooms, systemd notification, the status snapshot."""
