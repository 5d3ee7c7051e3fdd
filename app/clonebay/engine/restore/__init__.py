"""Restore readers: an image directory, an image stream, and the layout a manifest recorded.
They only feed the one target path (engine/target/); nothing here writes a disk by itself."""
