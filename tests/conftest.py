"""Shared test configuration (fixtures live beside the tests that use them)."""
