"""Class labels of the known models.

COCO ids follow the TensorFlow Object Detection API's ``mscoco_label_map`` (1-based, 90 ids of which 80
are used), which is what MLPerf's SSD-MobileNet graph emits in ``detection_classes``.
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

#: COCO detection labels by class id (1 = person); unused ids are absent.
COCO_LABELS: dict[int, str] = {i: name.replace("_", " ") for i, name in enumerate(_COCO_NAMES, start=1) if name != "-"}

#: The one class of the SSDLite person detector.
PERSON_LABELS: dict[int, str] = {1: "person"}


def label_for(labels: dict[int, str], class_id: int) -> str:
    """The label of ``class_id``, or ``class_<id>`` when the model has no name for it."""
    return labels.get(class_id, f"class_{class_id}")
