"""The foundation: event contracts, settings, the database and its migrations, the KPI
catalogue. It imports nothing above it (the layer contracts in pyproject.toml)."""
