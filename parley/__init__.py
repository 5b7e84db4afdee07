"""Parley: an open, self-hostable messaging service of the iMessage kind."""

__version__ = "0.1.0"
