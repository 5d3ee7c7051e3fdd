"""Resuming a save or a clone that a kill, a crash, a power cut or an unplugged disk stopped."""
