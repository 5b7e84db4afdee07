"""The sans-I/O core: Parley's decisions as plain functions and small state machines.

Nothing here reads the clock, makes ids, touches a socket or a database: ``now`` and ids
are passed in, results are plain data. The server and client shells do the I/O.
"""
