"""
Data of the VFNet project: the synthetic "shapes" dataset (generated locally, no download), the
VFNet-X training augmentations and the dataset mappers.
"""
from .augmentations import (
    CutOut,
    CutOutTransform,
    MultiScaleKeepRatioResize,
    RandomCropKeepingBoxes,
    boxes_kept_by_crop,
    build_train_augmentations,
    keep_ratio_size,
)
from .loader import build_seeded_train_loader
from .mapper import CheckedDatasetMapper, DatasetMapperWithBoxes
from .synthetic_shapes import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    TRAIN_NAME,
    VAL_NAME,
    default_root,
    ensure_shapes_dataset,
    register_builtin_shapes_datasets,
    generate_shapes_dataset,
    register_shapes_dataset,
    render_shapes_image,
)

__all__ = [
    "CheckedDatasetMapper",
    "CutOut",
    "CutOutTransform",
    "DatasetMapperWithBoxes",
    "MultiScaleKeepRatioResize",
    "RandomCropKeepingBoxes",
    "boxes_kept_by_crop",
    "build_train_augmentations",
    "build_seeded_train_loader",
    "keep_ratio_size",
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "TRAIN_NAME",
    "VAL_NAME",
    "default_root",
    "ensure_shapes_dataset",
    "register_builtin_shapes_datasets",
    "generate_shapes_dataset",
    "register_shapes_dataset",
    "render_shapes_image",
]

register_builtin_shapes_datasets()
