"""The device kit: runners' timing, probe and wire protocol, shipped to a board as one file."""
