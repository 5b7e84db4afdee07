"""SMS carriers: one gateway interface, and the built-in carrier simulator."""
