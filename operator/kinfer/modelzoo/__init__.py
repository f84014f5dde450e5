"""``kinfer model build``: models and a small image dataset, built offline.

Four models, each with the interface of the MLPerf inference v0.5 file it stands for (tensor names,
dtypes, input size and layout) and a ``model.json`` that ``kinfer serve --model DIR`` reads:

- ``ssdlite-person``: a real detector (PyPI weights, one class: person), SSD-MobileNet's interface.
- ``ssd-mobilenet``: SSD-MobileNet-v1 300x300, uint8 NHWC input, COCO category ids 1..90.
- ``ssd-resnet34``: SSD-ResNet34 1200x1200, float32 NCHW input, contiguous COCO ids 1..80.
- ``resnet50``: ResNet50 224x224 classifier, float32 NHWC input.

The last three have random weights of the real shapes, for performance work (their outputs are
meaningless); ``--tiny`` builds a version of tens of KB with the same interface, for tests.
TensorFlow, tf2onnx and scikit-image are imported lazily, only while building.
"""
