"""Locust users and the raw request log (loaded by path by Locust; a package for the import linter)."""
