"""Outgoing webhooks for Django."""

__version__ = "0.1.0"
