"""
Registration of the synthetic shapes dataset in Detectron2's catalogs: on request
(:func:`register_shapes_dataset`, generating it first) or, for the built-in names, right away with
generation deferred to the first use (:func:`register_builtin_shapes_datasets`).
"""
import os
from typing import Optional, Tuple

from .cache import default_root, ensure_shapes_dataset
from .render import CLASS_NAMES

__all__ = ["TRAIN_NAME", "VAL_NAME", "THING_COLORS", "BUILTIN_SPLITS", "register_shapes_dataset", "register_builtin_shapes_datasets"]

# Visualisation only (MetadataCatalog.thing_colors); the images do not use them.
THING_COLORS = [(230, 25, 75), (0, 130, 200), (255, 180, 0), (60, 180, 75), (145, 30, 180), (0, 200, 200)]
TRAIN_NAME = "vfnet_shapes_train"
VAL_NAME = "vfnet_shapes_val"


def register_shapes_dataset(
    root: Optional[str] = None, num_train: int = 3000, num_val: int = 300, seed: int = 0, **kwargs
) -> Tuple[str, str]:
    """Generate the dataset if needed (see `ensure_shapes_dataset`) and register it in Detectron2 as
    ``vfnet_shapes_train`` / ``vfnet_shapes_val`` (COCO json: evaluator_type "coco", thing_classes,
    thing_colors). Idempotent; called again with another root or parameters it re-registers.
    Returns (train_name, val_name)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    paths = ensure_shapes_dataset(root, num_train, num_val, seed, **kwargs)
    metadata = {
        "thing_classes": list(CLASS_NAMES),
        "thing_colors": [list(c) for c in THING_COLORS],
        "thing_dataset_id_to_contiguous_id": {k + 1: k for k in range(len(CLASS_NAMES))},
    }
    for name, split in ((TRAIN_NAME, "train"), (VAL_NAME, "val")):
        json_file, image_root = paths[split]
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if getattr(meta, "json_file", None) == json_file and getattr(meta, "image_root", None) == image_root:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, dict(metadata), json_file, image_root)
    return TRAIN_NAME, VAL_NAME


# Names registered when `vfnet.data` is imported; the data are generated on first use.
BUILTIN_SPLITS = {
    # name: (root suffix, split, num_train, num_val)
    TRAIN_NAME: ("", "train", 3000, 300),
    VAL_NAME: ("", "val", 3000, 300),
    TRAIN_NAME + "_tiny": ("-tiny", "train", 32, 16),  # for quick end-to-end checks
    VAL_NAME + "_tiny": ("-tiny", "val", 32, 16),
}


def register_builtin_shapes_datasets() -> None:
    """
    Register ``vfnet_shapes_{train,val}`` (3000 / 300 images) and ``vfnet_shapes_{train,val}_tiny``
    (32 / 16 images) in Detectron2's catalogs without generating anything: each split is generated
    (see `ensure_shapes_dataset`) the first time its dicts are asked for. The metadata (classes,
    colours, COCO json path for COCOEvaluator) is set right away. Roots follow `default_root`
    (``$VFNET_DATASETS`` when set) at the time of use. Idempotent.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    for name, (suffix, split, num_train, num_val) in BUILTIN_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        root = default_root() + suffix

        def load(name=name, root=root, split=split, num_train=num_train, num_val=num_val):
            json_file, image_root = ensure_shapes_dataset(root, num_train, num_val)[split]
            return load_coco_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=list(CLASS_NAMES),
            thing_colors=[list(c) for c in THING_COLORS],
            json_file=os.path.join(root, f"{split}.json"),
            image_root=os.path.join(root, split),
            evaluator_type="coco",
        )
