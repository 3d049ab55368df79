"""Data: image folders and lists, the preprocessing card, labels, the bundled photos."""
