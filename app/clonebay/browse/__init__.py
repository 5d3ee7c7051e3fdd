"""Read-only views of images: list, extract, mount."""
