"""
The user's own data: a COCO-format JSON with its image folder, or a Pascal VOC folder, registered
in Detectron2's catalogs with class names (and so the number of classes) taken from the data.
"""
import json
import logging
import os
import xml.etree.ElementTree as ET
from typing import List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode

__all__ = ["register_coco_dataset", "register_voc_dataset", "register_dataset_spec"]

logger = logging.getLogger(__name__)


def _coco_class_names(json_file: str) -> List[str]:
    with open(json_file) as f:
        categories = json.load(f).get("categories")
    if not categories:
        raise ValueError(f"{json_file}: no 'categories' in this COCO file")
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def register_coco_dataset(name: str, json_file: str, image_root: str) -> List[str]:
    """
    Register a COCO-format detection dataset as ``name`` (idempotent for the same files).
    Category ids may be any integers: Detectron2 maps them to contiguous ids in sorted order.

    Returns:
        the class names, in the model's class order.
    """
    for path, what in ((json_file, "annotation file"), (image_root, "image folder")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: {what} {path} does not exist")
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if getattr(meta, "json_file", None) == json_file and getattr(meta, "image_root", None) == image_root:
            return list(meta.thing_classes) if hasattr(meta, "thing_classes") else _coco_class_names(json_file)
        registered = getattr(meta, "json_file", None) or getattr(meta, "dirname", None) or "files unknown"
        raise ValueError(f"dataset {name} is already registered with other files ({registered})")
    register_coco_instances(name, {}, json_file, image_root)
    classes = _coco_class_names(json_file)
    MetadataCatalog.get(name).set(thing_classes=classes)
    return classes


def _voc_class_names(dirname: str, split: str) -> List[str]:
    ids_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(ids_file):
        raise FileNotFoundError(f"{ids_file} does not exist (expected a Pascal VOC folder with ImageSets/Main/{split}.txt)")
    with open(ids_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    names = set()
    for image_id in ids:
        tree = ET.parse(os.path.join(dirname, "Annotations", f"{image_id}.xml"))
        names.update(obj.find("name").text.strip() for obj in tree.findall("object"))
    if not names:
        raise ValueError(f"{dirname}: no objects in the annotations of split {split}")
    return sorted(names)


def load_voc_instances(dirname: str, split: str, class_names: List[str]) -> List[dict]:
    """
    Pascal VOC annotations in Detectron2's format (as Detectron2's own loader, which in v0.6 fails
    on NumPy >= 1.24): boxes XYXY with 0-based pixel indices, "difficult" objects included.
    """
    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
        file_ids = [line.strip() for line in f if line.strip()]
    dicts = []
    for file_id in file_ids:
        anno_file = os.path.join(dirname, "Annotations", f"{file_id}.xml")
        tree = ET.parse(anno_file)
        instances = []
        for obj in tree.findall("object"):
            name = obj.find("name").text.strip()
            if name not in class_names:
                raise ValueError(f"{anno_file}: class {name!r} is not one of {class_names}")
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            instances.append(
                {"category_id": class_names.index(name), "bbox": [x0 - 1.0, y0 - 1.0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS}
            )
        dicts.append(
            {
                "file_name": os.path.join(dirname, "JPEGImages", f"{file_id}.jpg"),
                "image_id": file_id,
                "height": int(tree.find("size/height").text),
                "width": int(tree.find("size/width").text),
                "annotations": instances,
            }
        )
    return dicts


def register_voc_dataset(name: str, dirname: str, split: str, class_names: List[str] = None) -> List[str]:
    """
    Register a Pascal VOC-format folder (``Annotations/``, ``JPEGImages/``,
    ``ImageSets/Main/<split>.txt``) as ``name``. The class names are those found in the split's
    annotations, sorted, unless given (pass the training split's names to the test split).
    """
    class_names = list(class_names) if class_names else _voc_class_names(dirname, split)
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
        MetadataCatalog.get(name).set(
            thing_classes=class_names, dirname=dirname, split=split, year=2012, evaluator_type="coco"
        )
    return class_names


def register_dataset_spec(name: str, spec: str, class_names: List[str] = None) -> List[str]:
    """
    Register a dataset from a one-string spec, as ``tools/train_net.py`` takes them:
    ``coco:ANNOTATIONS.json:IMAGE_DIR`` or ``voc:VOC_DIR:SPLIT``.
    """
    kind, _, rest = spec.partition(":")
    parts = rest.rsplit(":", 1)
    if kind == "coco" and len(parts) == 2:
        return register_coco_dataset(name, parts[0], parts[1])
    if kind == "voc" and len(parts) == 2:
        return register_voc_dataset(name, parts[0], parts[1], class_names)
    raise ValueError(f"dataset spec {spec!r}: expected coco:ANNOTATIONS.json:IMAGE_DIR or voc:VOC_DIR:SPLIT")

