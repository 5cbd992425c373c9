"""
Checks of detection data before training: every problem is either an error that names the
image and the box, or a change that is counted and logged. Nothing is dropped silently.
"""
import logging
import os
from typing import Dict, List

from detectron2.structures import BoxMode

__all__ = ["DatasetError", "check_dataset_dicts"]

logger = logging.getLogger(__name__)

# COCO annotations often overhang the image by a rounding error; beyond this many pixels a box
# is an error.
_OVERHANG_TOLERANCE_PX = 1.0


class DatasetError(ValueError):
    """The dataset has an annotation or an image reference that cannot be used."""


def _xyxy(ann: Dict) -> List[float]:
    return BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)


def check_dataset_dicts(dataset_dicts: List[Dict], dataset_name: str = "dataset", check_files: bool = True) -> List[Dict]:
    """
    Check the dataset dicts of a detection dataset (Detectron2's standard format) in place.

    - an image file that does not exist: :class:`DatasetError` naming it;
    - a box that lies outside its image by more than 1 px: :class:`DatasetError` naming the
      image and the box; a smaller overhang is clipped to the image, and counted;
    - a degenerate box (zero or negative width or height, after clipping): the annotation is
      dropped, and counted;
    - a box that is not 4 finite numbers: :class:`DatasetError`.

    The counts are logged once per dataset. Returns the (updated) list.
    """
    clipped = dropped = 0
    for record in dataset_dicts:
        file_name = record.get("file_name", "<no file_name>")
        if check_files and not os.path.isfile(file_name):
            raise DatasetError(f"{dataset_name}: image file {file_name} does not exist")
        height, width = record.get("height"), record.get("width")
        kept = []
        for ann in record.get("annotations", []):
            if ann.get("iscrowd", 0):
                kept.append(ann)
                continue
            box = ann.get("bbox")
            if box is None or len(box) != 4 or not all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in box):
                raise DatasetError(f"{dataset_name}: image {file_name} has an invalid box {box!r}")
            x0, y0, x1, y1 = _xyxy(ann)
            if height is not None and width is not None:
                tol = _OVERHANG_TOLERANCE_PX
                if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
                    raise DatasetError(
                        f"{dataset_name}: image {file_name} ({width}x{height}) has a box outside the image: "
                        f"{list(box)} (XYXY {[round(v, 2) for v in (x0, y0, x1, y1)]})"
                    )
                cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
                if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                    clipped += 1
                    ann["bbox"] = [cx0, cy0, cx1, cy1]
                    ann["bbox_mode"] = BoxMode.XYXY_ABS
                    x0, y0, x1, y1 = cx0, cy0, cx1, cy1
            if x1 <= x0 or y1 <= y0:
                dropped += 1
                continue
            kept.append(ann)
        if "annotations" in record:
            record["annotations"] = kept
    if clipped or dropped:
        logger.warning(
            f"{dataset_name}: dropped {dropped} annotations with degenerate boxes (zero width or height) "
            f"and clipped {clipped} boxes that overhung their image by at most {_OVERHANG_TOLERANCE_PX:g} px"
        )
    return dataset_dicts
