"""Local mode (``kinfer run``): the same manifests executed as processes on this machine."""
