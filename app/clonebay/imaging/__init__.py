"""The clonebay image format (docs/format.md)."""
