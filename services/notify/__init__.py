"""The notify service: a stored inbox of notifications, delivered to the log and to webhooks."""
