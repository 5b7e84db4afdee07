"""The client SDK: a Parley device in Python (used by the CLI, the tests and the bench)."""
