"""The kinfer model server: a Flask app under gunicorn with pluggable inference backends.

``kinfer serve`` (``kinfer.server.cli``) builds the gunicorn configuration; each worker creates the
Flask app (``kinfer.server.app``), loads its own copy of the model after fork in a background thread
(``kinfer.server.runtime``) and answers ``/v2/health/ready`` with 503 until the model is warm.
Frameworks (TensorFlow, ONNX Runtime) are imported only inside their backend modules.
"""
