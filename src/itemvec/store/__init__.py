"""The bundle format: one directory written atomically, read without pickle."""
