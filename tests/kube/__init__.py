"""The emulated Kubernetes API server for end-to-end tests (see ``tests/e2e/conftest.py``)."""
