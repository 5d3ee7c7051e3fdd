"""Multicast sender and receiver."""
