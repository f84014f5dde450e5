"""ResNet50 with random weights and MLPerf's TF interface (``input_tensor:0`` -> ``ArgMax:0``,
``softmax_tensor:0``; 1001 classes, 0 = background), for performance work only: its classes are
meaningless. The tiny variant keeps the interface with one small convolution.
"""

from __future__ import annotations

from typing import Any

NUM_CLASSES = 1001
INPUT_SIZE = 224


def build(tiny: bool, seed: int = 0) -> tuple[Any, Any]:
    """The classifier as (``tf.Module`` holding the variables, concrete serving function)."""
    import keras  # type: ignore[import-untyped]
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(seed)
    if tiny:
        inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
        x = layers.Conv2D(4, 3, strides=8, padding="same", activation="relu")(inp)
        x = layers.GlobalAveragePooling2D()(x)
        net = keras.Model(inp, layers.Dense(NUM_CLASSES, activation="softmax")(x))
    else:
        net = keras.applications.ResNet50(weights=None, input_shape=(INPUT_SIZE, INPUT_SIZE, 3), classes=NUM_CLASSES)
    module = tf.Module()
    module.net = net

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name="input_tensor")]
    )
    def serve(input_tensor: Any) -> dict[str, Any]:
        probs = net(input_tensor)
        return {
            "ArgMax": tf.identity(tf.argmax(probs, axis=1), name="ArgMax"),
            "softmax_tensor": tf.identity(probs, name="softmax_tensor"),
        }

    return module, serve.get_concrete_function()
