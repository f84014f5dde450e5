"""Class labels of the known models.

Two numberings of the same 80 COCO classes, because MLPerf's detectors emit different ones:

- COCO category ids, as the TensorFlow Object Detection API's ``mscoco_label_map`` (1-based, 90 ids of
  which 80 are used): what MLPerf's SSD-MobileNet graph emits in ``detection_classes``.
- Contiguous ids 1..80 (the k-th category in id order; 0 is background): what MLPerf's SSD-ResNet34
  (``resnet34_tf.22.1.pb``) emits. Its harness maps them to category ids through
  ``[0] + cocoGt.getCatIds()`` (``PostProcessCocoTf`` with ``use_inv_map``); ``COCO80_LABELS`` names them
  directly, and ``COCO_CATEGORY_IDS`` is that map.
"""

from __future__ import annotations

# fmt: off
_COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic_light",
    "fire_hydrant", "-", "stop_sign", "parking_meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "-", "backpack", "umbrella", "-", "-", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports_ball", "kite", "baseball_bat", "baseball_glove", "skateboard",
    "surfboard", "tennis_racket", "bottle", "-", "wine_glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot_dog", "pizza", "donut", "cake", "chair",
    "couch", "potted_plant", "bed", "-", "dining_table", "-", "-", "toilet", "-", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell_phone", "microwave", "oven", "toaster", "sink", "refrigerator", "-", "book",
    "clock", "vase", "scissors", "teddy_bear", "hair_drier", "toothbrush",
]
# fmt: on

#: COCO detection labels by category id (1 = person ... 13 = stop sign ... 90 = toothbrush); unused ids are absent.
COCO_LABELS: dict[int, str] = {i: name.replace("_", " ") for i, name in enumerate(_COCO_NAMES, start=1) if name != "-"}

#: COCO category id of each contiguous class: ``COCO_CATEGORY_IDS[k]`` for class k, 0 for background.
COCO_CATEGORY_IDS: tuple[int, ...] = (0, *sorted(COCO_LABELS))

#: COCO detection labels by contiguous class id (1 = person ... 12 = stop sign ... 80 = toothbrush).
#: Background (0) has no label: it is never a detection, only an empty output slot.
COCO80_LABELS: dict[int, str] = {k: COCO_LABELS[cat] for k, cat in enumerate(COCO_CATEGORY_IDS) if k > 0}

#: The one class of the SSDLite person detector.
PERSON_LABELS: dict[int, str] = {1: "person"}


def label_for(labels: dict[int, str], class_id: int) -> str:
    """The label of ``class_id``, or ``class_<id>`` when the model has no name for it."""
    return labels.get(class_id, f"class_{class_id}")
