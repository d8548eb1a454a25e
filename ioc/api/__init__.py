"""The HTTP API app: push receivers, Open311, alert acknowledgement, health and metrics."""
