"""The portico command line."""
