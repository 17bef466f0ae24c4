"""The knetcheck pytest plugin (being written)."""
