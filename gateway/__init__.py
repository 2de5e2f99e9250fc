"""CampusGuard gateway: serial links -> frames -> events -> incidents -> outbox -> MQTT relay."""
