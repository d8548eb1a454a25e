"""Every topic, declared once. Values are raw bytes: agents validate them with pydantic."""

import faust

from streams.app import app, settings


def _topic(name: str) -> faust.TopicT:
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw",
                     partitions=settings.partitions)


dossiers = _topic("dossiers")
documents = _topic("documents")
field_reports = _topic("field_reports")
evaluations = _topic("evaluations")
dead_letters = _topic("dead_letters")
