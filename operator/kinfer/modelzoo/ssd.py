"""An SSD-MobileNet-v1-like detector with random weights and the real interface and cost.

Same tensors and dtypes as MLPerf's ``ssd_mobilenet_v1_coco_2018_01_28.pb``: ``image_tensor:0``
uint8 [N, 300, 300, 3] -> ``num_detections:0``, ``detection_boxes:0`` (normalised ymin, xmin, ymax,
xmax), ``detection_scores:0``, ``detection_classes:0`` (1-based COCO ids). Architecture as the
Object Detection API's config: MobileNet-v1 backbone, feature maps 19, 10, 5, 3, 2, 1 with 3/6 anchors
(1917 in all), 91 classes with sigmoid scores, box coder scales (10, 10, 5, 5), multiclass NMS
(IoU 0.6, 100 per class and in total). The class-head bias is -4 (scores ~0.02, as a trained model's
mostly-background scores): with ~0.5 everywhere NMS would be unrealistically slow. Its detections
are meaningless. The tiny variant keeps the interface with two small feature maps and 4 classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CLASS_BIAS = -4.0
NMS_IOU = 0.6
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class SsdShape:
    """The sizes that differ between the full model and the tiny test fixture."""

    input_size: int
    feature_maps: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]
    num_classes: int  # without background
    tiny: bool


#: MobileNet-v1's depthwise-separable blocks: (pointwise filters, stride).
MOBILENET_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip

FULL = SsdShape(300, (19, 10, 5, 3, 2, 1), (3, 6, 6, 6, 6, 6), 90, tiny=False)
TINY = SsdShape(300, (5, 3), (3, 6), 4, tiny=True)


def anchors(shape: SsdShape) -> np.ndarray[Any, np.dtype[np.float32]]:
    """SSD anchors (ycenter, xcenter, h, w), normalised, in the order the heads emit them."""
    n = len(shape.feature_maps)
    scales = [0.2 + (0.95 - 0.2) * k / max(1, n - 1) for k in range(n)] + [1.0]
    out: list[tuple[float, float, float, float]] = []
    for k, (size, per_cell) in enumerate(zip(shape.feature_maps, shape.anchors_per_cell, strict=True)):
        if per_cell == 3:
            boxes = [(0.1, 1.0), (scales[k], 2.0), (scales[k], 0.5)]
        else:
            boxes = [(scales[k], r) for r in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)]
            boxes.append((math.sqrt(scales[k] * scales[k + 1]), 1.0))
        for i in range(size):
            for j in range(size):
                for scale, ratio in boxes[:per_cell]:
                    out.append(((i + 0.5) / size, (j + 0.5) / size, scale / math.sqrt(ratio), scale * math.sqrt(ratio)))
    return np.asarray(out, dtype=np.float32)


def _backbone(shape: SsdShape) -> Any:
    """A Keras model image(float, [-1, 1]) -> the SSD feature maps."""
    import keras  # type: ignore[import-untyped]
    from keras import layers

    size = shape.input_size
    inp = keras.Input((size, size, 3))
    if not shape.tiny:
        # MobileNet-v1 with SAME padding as the Object Detection API uses (keras.applications pads
        # differently and would give 18x18 and 9x9 maps); batch norm is folded in a frozen graph anyway.
        x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu6")(inp)
        maps = []
        for i, (filters, stride) in enumerate(MOBILENET_BLOCKS, start=1):
            x = layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu6")(x)
            x = layers.Conv2D(filters, 1, activation="relu6")(x)
            if i in (11, 13):
                maps.append(x)
        for depth in (512, 256, 256, 128):
            x = layers.Conv2D(depth // 2, 1, activation="relu6")(x)
            x = layers.Conv2D(depth, 3, strides=2, padding="same", activation="relu6")(x)
            maps.append(x)
        return keras.Model(inp, maps)
    x = layers.Conv2D(4, 3, strides=6, padding="same", activation="relu6")(inp)  # 50
    x = layers.Conv2D(8, 3, strides=10, padding="same", activation="relu6")(x)  # 5
    y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)  # 3
    return keras.Model(inp, [x, y])


def build(shape: SsdShape, seed: int = 0) -> tuple[Any, Any]:
    """The detector as (``tf.Module`` holding the variables, concrete serving function)."""
    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(seed)
    backbone = _backbone(shape)
    classes = shape.num_classes + 1
    box_heads = [layers.Conv2D(a * 4, 1) for a in shape.anchors_per_cell]
    cls_heads = [
        layers.Conv2D(a * classes, 1, bias_initializer=keras.initializers.Constant(CLASS_BIAS))
        for a in shape.anchors_per_cell
    ]
    anchor = tf.constant(anchors(shape))
    module = tf.Module()
    module.layers = [backbone, *box_heads, *cls_heads]

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[tf.TensorSpec([None, shape.input_size, shape.input_size, 3], tf.uint8, name="image_tensor")]
    )
    def serve(image_tensor: Any) -> dict[str, Any]:
        x = tf.cast(image_tensor, tf.float32) / 127.5 - 1.0
        maps = backbone(x)
        n = tf.shape(x)[0]
        enc = tf.concat([tf.reshape(h(m), [n, -1, 4]) for h, m in zip(box_heads, maps, strict=True)], 1)
        logits = tf.concat([tf.reshape(h(m), [n, -1, classes]) for h, m in zip(cls_heads, maps, strict=True)], 1)
        ty, tx, th, tw = tf.unstack(enc / [10.0, 10.0, 5.0, 5.0], axis=-1)
        ya, xa, ha, wa = tf.unstack(anchor, axis=-1)
        yc, xc = ty * ha + ya, tx * wa + xa
        h, w = tf.exp(th) * ha, tf.exp(tw) * wa
        boxes = tf.clip_by_value(tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1), 0.0, 1.0)
        scores = tf.sigmoid(logits)[:, :, 1:]
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, tf.newaxis, :], scores, MAX_DETECTIONS, MAX_DETECTIONS,
            iou_threshold=NMS_IOU, score_threshold=1e-8, clip_boxes=False,
        )  # fmt: skip
        return {
            "num_detections": tf.identity(tf.cast(nms.valid_detections, tf.float32), name="num_detections"),
            "detection_boxes": tf.identity(nms.nmsed_boxes, name="detection_boxes"),
            "detection_scores": tf.identity(nms.nmsed_scores, name="detection_scores"),
            "detection_classes": tf.identity(nms.nmsed_classes + 1.0, name="detection_classes"),
        }

    return module, serve.get_concrete_function()
