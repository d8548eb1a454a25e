"""The embedded stack: a broker, PostgreSQL, the workers, the API and the demo on loopback."""
