"""Offline weight sources and their safe readers."""
