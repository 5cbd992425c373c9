"""Datasets of the VFNet project: the synthetic "shapes" dataset (generated locally, no download)."""
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
