"""Rescue reading of failing sources (``--rescue``): reader.py reads in ddrescue's order and
keeps the map (mapfile.py, ddrescue's format); image.py and recovered.py add what the later
passes read to a saved image; the clone hands it to its targets."""
