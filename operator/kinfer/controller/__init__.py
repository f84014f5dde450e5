"""The kinfer operator (kopf): thin handlers over pure manifest builders.

One module per resource for handlers, pure builders that return manifests, and one module that talks
to the Kubernetes API. kopf is imported only inside this package (an import-linter contract).
"""
