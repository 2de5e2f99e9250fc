"""The outbox to the police's MQTT broker and signed acks back."""
