"""Filesystem probes: type, label, uuid, state, and the byte runs a copy must carry."""
