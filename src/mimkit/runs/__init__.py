"""A run's output folder: its lock, writable paths and atomically written JSON results."""
