"""The parley command line."""
