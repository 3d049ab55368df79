"""Placeholder package; filled by the conversion issue."""
