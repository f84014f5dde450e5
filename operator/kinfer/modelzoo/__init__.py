"""``kinfer model build``: models and a small image dataset, built offline.

``ssdlite-person`` is a real detector (PyPI weights, one class: person); ``ssd-mobilenet`` and
``resnet50`` are random-weight models of the real shapes for performance work (their outputs are
meaningless). TensorFlow, tf2onnx and scikit-image are imported lazily, only while building.
"""
