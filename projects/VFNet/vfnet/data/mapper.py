"""
Detectron2's ``DatasetMapper`` with errors that name the image, and a variant whose augmentations
also see the boxes.
"""

import copy

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

__all__ = ["CheckedDatasetMapper", "DatasetMapperWithBoxes"]


class CheckedDatasetMapper(DatasetMapper):
    """
    A :class:`DatasetMapper` whose failures (a missing, unreadable or corrupt image file, an image
    whose size differs from its annotation) raise an error naming the image file.
    """

    def __call__(self, dataset_dict):
        file_name = dataset_dict.get("file_name", "<no file_name>")
        try:
            return self._map(copy.deepcopy(dataset_dict))
        except Exception as e:  # re-raised with the file named; the cause stays attached
            raise RuntimeError(f"failed to load image {file_name}: {type(e).__name__}: {e}") from e

    def _map(self, dataset_dict):
        return super().__call__(dataset_dict)


def _instance_boxes(dataset_dict) -> np.ndarray:
    """(N, 4) float32 XYXY boxes of the non-crowd annotations (those the mapper turns into instances)."""
    boxes = [
        BoxMode.convert(anno["bbox"], anno["bbox_mode"], BoxMode.XYXY_ABS)
        for anno in dataset_dict.get("annotations", [])
        if anno.get("iscrowd", 0) == 0
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


class DatasetMapperWithBoxes(CheckedDatasetMapper):
    """
    :class:`CheckedDatasetMapper` whose augmentations also see the image's boxes, for those whose
    ``get_transform`` takes ``boxes`` (:class:`vfnet.data.RandomCropKeepingBoxes`). Detectron2's
    ``DatasetMapper`` gives them only the image (and ``sem_seg``).

    The boxes are the non-crowd annotations' boxes, XYXY absolute, as they stand when each
    augmentation runs. Everything else is ``DatasetMapper``'s: the annotations are transformed with
    the returned transforms, clipped to the image, and empty boxes dropped
    (``filter_empty_instances``). Without annotations (e.g. at test time) ``boxes`` is None and an
    augmentation that needs it raises.
    """

    def _map(self, dataset_dict):
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        else:
            sem_seg_gt = None
        boxes = _instance_boxes(dataset_dict) if "annotations" in dataset_dict else None

        aug_input = T.AugInput(image, boxes=boxes, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg

        image_shape = image.shape[:2]  # h, w
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
