"""Multicast and TCP jobs: what a sender offers (an image's frames or a live disk's chunks, as a
catalog of objects) and the receiver's feed into the one target path (engine/target/)."""
