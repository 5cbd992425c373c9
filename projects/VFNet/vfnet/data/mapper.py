"""Detectron2's ``DatasetMapper``, with errors that name the image they are about."""
import copy

from detectron2.data import DatasetMapper

__all__ = ["CheckedDatasetMapper"]


class CheckedDatasetMapper(DatasetMapper):
    """
    A :class:`DatasetMapper` whose failures (a missing, unreadable or corrupt image file, an image
    whose size differs from its annotation) raise an error naming the image file.
    """

    def __call__(self, dataset_dict):
        file_name = dataset_dict.get("file_name", "<no file_name>")
        try:
            return super().__call__(copy.deepcopy(dataset_dict))
        except Exception as e:  # re-raised with the file named; the cause stays attached
            raise RuntimeError(f"failed to load image {file_name}: {type(e).__name__}: {e}") from e
