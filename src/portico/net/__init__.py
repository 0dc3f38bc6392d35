"""Sockets below the server classes: listeners, addresses, accept policy, wake-ups.

Nothing in this package imports from :mod:`portico.server` or above.
"""
