"""Shipped weights files (package data): one folder per network."""
