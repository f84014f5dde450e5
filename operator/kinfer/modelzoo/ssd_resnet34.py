"""An SSD-ResNet34-1200 detector with random weights and the real interface and cost.

Stands in for MLPerf inference v0.5's ``resnet34_tf.22.1.pb``; its detections are meaningless (random
weights), it exists for performance work. Interface as that file's (MLPerf profile ``ssd-resnet34-tf``)
and ``KNOWN_MODELS["ssd-resnet34"]``: ``image:0`` float32 [N, 3, 1200, 1200], NCHW (RGB minus the VGG
channel means, as ``pre_process_coco_resnet34_tf``, then transposed: the profile's ``"data-format":
"NCHW"``) -> ``detection_bboxes:0`` [N, 200, 4] (normalised ymin, xmin, ymax, xmax),
``detection_classes:0`` [N, 200] and ``detection_scores:0`` [N, 200], best first. Classes are
contiguous ids 1..80 (the k-th COCO category in id order, ``kinfer.server.labels.COCO80_LABELS``),
which MLPerf's ``PostProcessCocoTf`` maps to category ids (``use_inv_map``); slots past the last
detection hold score 0, class 0 (background) and an empty box (there is no count tensor: a reader
stops at a score threshold, as ``PostProcessCocoTf`` stops at 0.05).

Shapes come from MLPerf's reference (``vision/classification_and_detection/python/models/ssd_r34.py``
and ``base_model_r34.py``): ResNet-34's conv1..conv4_x with conv4_x's first block at stride 1 (256
channels at 150x150), five extra blocks (1x1 then 3x3 convolutions: 512@75, 512@38, 256@19, 256@9,
256@7), and 3x3 location and class heads at stride 3 on those six maps, which gives the 50, 25, 13, 7,
3, 3 grids; 4/6/6/6/4/4 default boxes per cell (15130 in all) from ``dboxes_R34_coco``; 81 classes
(background + 80) with softmax scores; box coder scales 0.1 (centre) and 0.2 (size); per-class NMS at
IoU 0.5 and score 0.05, at most 200 detections (``decode_batch_with_nms_trace``). About 20 M weights
and 433 GFLOPs per image, MLPerf's figure for this model.

Inside, the graph transposes its input to NHWC, the layout TensorFlow's CPU convolutions take
(tf2onnx's optimiser folds that transpose into ONNX's NCHW convolutions). There is no batch norm (an
inference graph folds it into the convolutions). So that 13 residual blocks of random weights neither
explode nor vanish, convolutions are He-initialised, the last convolution of each residual branch is
scaled down by the number of blocks (Fixup-style) and conv1 by the input's spread (mean-subtracted
pixels, about 60); the heads are then scaled on one real picture so that box outputs and class logits
have a spread of 1 (data-dependent, as LSUV initialisation does). With the object classes' bias at -6,
scores stay mostly low, as a trained model's mostly-background output: on the dataset's pictures 150
to 7,000 class/box pairs score above 0.05 and up to about 20 detections above 0.5. Uniform random
scores would make NMS unrealistically slow.

The tiny variant (tests) keeps the whole interface, 1200x1200 input included, as ``ssd.TINY`` keeps
300x300: three strided convolutions, two small grids (5, 3) with 4/6 boxes per cell (154 in all), 1x1
heads, all 80 classes (so class ids span 1..80); about 9,000 weights, an inference in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_NAME = "image"
NUM_CLASSES = 80  # without background
OBJECT_CLASS_BIAS = -6.0
#: Standard deviation of the class heads' logits and of the box heads' outputs on the calibration picture.
CLASS_LOGIT_STD = 1.0
BOX_OUTPUT_STD = 1.0
CALIBRATION_PICTURE = "astronaut"
INPUT_SPREAD = 60.0  # standard deviation of a mean-subtracted pixel, for conv1's initialiser
NMS_IOU = 0.5
SCORE_THRESHOLD = 0.05
MAX_DETECTIONS = 200
#: Box coder: centre offsets are scaled by 0.1 and log sizes by 0.2 (MLPerf's ``scale_xy``, ``scale_wh``).
SCALE_XY, SCALE_WH = 0.1, 0.2
#: Default box scales at 300x300, scaled to the input size (``dboxes_R34_coco``).
SCALES_300 = (21, 45, 99, 153, 207, 261, 315)
#: ResNet-34 stages used: (filters, blocks, stride of the first block); conv4_x keeps stride 1.
RESNET34_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 1))
#: SSD extra blocks: (1x1 filters, 3x3 filters, stride, padding).
EXTRA_BLOCKS = (
    (256, 512, 2, "same"), (256, 512, 2, "same"), (128, 256, 2, "same"), (128, 256, 2, "valid"), (128, 256, 1, "valid"),
)  # fmt: skip


@dataclass(frozen=True)
class R34Shape:
    """The sizes that differ between the full model and the tiny test fixture."""

    input_size: int
    feature_maps: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]
    #: kernel size and stride of the location and class heads
    head_kernel: int
    head_stride: int
    tiny: bool


def head_grids(input_size: int, head_stride: int = 3) -> tuple[int, ...]:
    """The grid size of each head of the full network at ``input_size`` (SAME padding rounds up)."""
    size = math.ceil(math.ceil(input_size / 2) / 2)  # conv1, max pool
    for _, _, stride in RESNET34_STAGES:
        size = math.ceil(size / stride)
    sizes = [size]
    for _, _, stride, padding in EXTRA_BLOCKS:
        size = math.ceil(size / stride) if padding == "same" else (size - 3) // stride + 1
        sizes.append(size)
    return tuple(math.ceil(s / head_stride) for s in sizes)


FULL = R34Shape(1200, head_grids(1200), (4, 6, 6, 6, 4, 4), head_kernel=3, head_stride=3, tiny=False)
TINY = R34Shape(1200, (5, 3), (4, 6), head_kernel=1, head_stride=1, tiny=True)


def anchors(shape: R34Shape) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Default boxes (ycenter, xcenter, h, w), normalised and clamped to [0, 1] as MLPerf's are.

    The set is ``DefaultBoxes`` of MLPerf's reference; the order is cell by cell (row, column, box),
    the order this graph's channels-last heads emit, where the NCHW reference goes box shape by box shape.
    """
    size = shape.input_size
    n = len(shape.feature_maps)
    scales = [int(s * size / 300) / size for s in SCALES_300[: n + 1]]
    out: list[tuple[float, float, float, float]] = []
    for k, (cells, per_cell) in enumerate(zip(shape.feature_maps, shape.anchors_per_cell, strict=True)):
        fk = size // int(size / cells)  # MLPerf's cells per side, from its integer steps (= cells here)
        sk1, sk3 = scales[k], math.sqrt(scales[k] * scales[k + 1])
        sizes = [(sk1, sk1), (sk3, sk3)]  # (w, h)
        for ratio in (2.0, 3.0)[: (per_cell - 2) // 2]:
            sizes += [
                (sk1 * math.sqrt(ratio), sk1 / math.sqrt(ratio)),
                (sk1 / math.sqrt(ratio), sk1 * math.sqrt(ratio)),
            ]
        for i in range(cells):
            for j in range(cells):
                for w, h in sizes:
                    out.append(((i + 0.5) / fk, (j + 0.5) / fk, h, w))
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _backbone(shape: R34Shape) -> Any:
    """A Keras model image (float, mean-subtracted) -> the feature maps the heads read."""
    import keras  # type: ignore[import-untyped]
    from keras import layers

    size = shape.input_size
    inp = keras.Input((size, size, 3))
    if shape.tiny:
        x = layers.Conv2D(4, 3, strides=24, padding="same", activation="relu")(inp)  # 50
        x = layers.Conv2D(8, 3, strides=10, padding="same", activation="relu")(x)  # 5
        y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)  # 3
        return keras.Model(inp, [x, y])

    def conv(
        x: Any, filters: int, kernel: int, stride: int = 1, padding: str = "same", relu: bool = True, gain: float = 2.0
    ) -> Any:
        """A convolution with weights of variance ``gain / fan_in`` (2: He), then ReLU unless told not.

        Each layer gets its own initialiser: a Keras initialiser without a seed draws the same values
        at every call, so one shared instance would give equal-shaped layers identical weights.
        """
        init = keras.initializers.VarianceScaling(gain, mode="fan_in", distribution="truncated_normal")
        activation = "relu" if relu else None
        return layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, activation=activation, kernel_initializer=init
        )(x)

    blocks = sum(n for _, n, _ in RESNET34_STAGES)
    x = conv(inp, 64, 7, 2, gain=2.0 / INPUT_SPREAD**2)  # 600
    x = layers.MaxPool2D(3, 2, padding="same")(x)  # 300
    for filters, count, stride in RESNET34_STAGES:  # 300, 150, 150
        for b in range(count):
            s = stride if b == 0 else 1
            y = conv(conv(x, filters, 3, s), filters, 3, relu=False, gain=2.0 / blocks)
            shortcut = x if s == 1 and x.shape[-1] == filters else conv(x, filters, 1, s, relu=False)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    maps = [x]
    for mid, filters, stride, padding in EXTRA_BLOCKS:  # 75, 38, 19, 9, 7
        x = conv(conv(x, mid, 1), filters, 3, stride, padding)
        maps.append(x)
    return keras.Model(inp, maps)


def _calibration_input(shape: R34Shape) -> np.ndarray[Any, np.dtype[np.float32]]:
    """One real picture, pre-processed as the server does, as an NHWC batch of one.

    That is the server's row before its transpose to CHW: the backbone reads NHWC, the serving
    function transposes its NCHW input before calling it.
    """
    from kinfer.modelzoo.dataset import load_original
    from kinfer.server.modelspec import KNOWN_MODELS
    from kinfer.server.preprocess import preprocess

    spec = KNOWN_MODELS["ssd-resnet34"]
    size = (shape.input_size, shape.input_size)
    picture = preprocess(load_original(CALIBRATION_PICTURE), spec.preprocess, size, "float32")
    return np.asarray(picture, dtype=np.float32)[np.newaxis]


def _rescale(head: Any, feature_map: Any, target_std: float) -> None:
    """Scale a head's kernel so that its output (less the bias) has ``target_std`` on ``feature_map``.

    Data-dependent initialisation (as LSUV does): without batch norm the random features' magnitude
    depends on the draw, and the scores' spread, hence the NMS workload, would depend on it too.
    """
    out = np.asarray(head(feature_map)) - np.asarray(head.bias)
    head.kernel.assign(np.asarray(head.kernel) * (target_std / max(float(out.std()), 1e-12)))


def build(shape: R34Shape, seed: int = 0) -> tuple[Any, Any]:
    """The detector as (``tf.Module`` holding the variables, concrete serving function)."""
    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(seed)
    backbone = _backbone(shape)
    classes = NUM_CLASSES + 1
    class_bias = np.full(classes, OBJECT_CLASS_BIAS, dtype=np.float32)
    class_bias[0] = 0.0  # background
    kernel, stride = shape.head_kernel, shape.head_stride
    box_heads = [layers.Conv2D(a * 4, kernel, strides=stride, padding="same") for a in shape.anchors_per_cell]
    cls_heads = [
        layers.Conv2D(
            a * classes, kernel, strides=stride, padding="same",
            bias_initializer=keras.initializers.Constant(np.tile(class_bias, a)),
        )
        for a in shape.anchors_per_cell
    ]  # fmt: skip
    maps = backbone(_calibration_input(shape))
    for heads, target in ((box_heads, BOX_OUTPUT_STD), (cls_heads, CLASS_LOGIT_STD)):
        for head, feature_map in zip(heads, maps, strict=True):
            _rescale(head, feature_map, target)
    anchor = tf.constant(anchors(shape))
    module = tf.Module()
    module.layers = [backbone, *box_heads, *cls_heads]
    size = shape.input_size

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[tf.TensorSpec([None, 3, size, size], tf.float32, name=INPUT_NAME)]
    )
    def serve(image: Any) -> dict[str, Any]:
        maps = backbone(tf.transpose(image, [0, 2, 3, 1]))  # NCHW in, NHWC for the CPU convolutions
        n = tf.shape(image)[0]
        enc = tf.concat([tf.reshape(head(m), [n, -1, 4]) for head, m in zip(box_heads, maps, strict=True)], 1)
        logits = tf.concat([tf.reshape(head(m), [n, -1, classes]) for head, m in zip(cls_heads, maps, strict=True)], 1)
        tx, ty, tw, th = tf.unstack(enc, axis=-1)  # MLPerf's heads emit x, y, w, h
        ya, xa, ha, wa = tf.unstack(anchor, axis=-1)
        yc, xc = SCALE_XY * ty * ha + ya, SCALE_XY * tx * wa + xa
        h, w = tf.exp(SCALE_WH * th) * ha, tf.exp(SCALE_WH * tw) * wa
        boxes = tf.clip_by_value(tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1), 0.0, 1.0)
        scores = tf.nn.softmax(logits, axis=-1)[:, :, 1:]
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, tf.newaxis, :], scores, MAX_DETECTIONS, MAX_DETECTIONS,
            iou_threshold=NMS_IOU, score_threshold=SCORE_THRESHOLD, clip_boxes=False,
        )  # fmt: skip
        filled = tf.range(MAX_DETECTIONS)[tf.newaxis, :] < nms.valid_detections[:, tf.newaxis]
        ids = nms.nmsed_classes + 1.0  # index into the object classes -> contiguous id 1..80
        return {
            "detection_bboxes": tf.identity(nms.nmsed_boxes, name="detection_bboxes"),
            "detection_classes": tf.identity(tf.where(filled, ids, 0.0), name="detection_classes"),
            "detection_scores": tf.identity(nms.nmsed_scores, name="detection_scores"),
        }

    return module, serve.get_concrete_function()
