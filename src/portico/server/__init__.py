"""The stdlib-compatible server surface: base, socket servers, handlers, mixins.

Import the public names from :mod:`portico`; the modules here each hold one part.
"""
