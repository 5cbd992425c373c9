"""Do an exported model's detections agree with the eager model's?"""
from typing import Dict

import torch
from detectron2.structures import Instances

__all__ = ["BOX_TOLERANCE_PX", "SCORE_TOLERANCE", "detection_agreement"]

#: Largest box-coordinate difference (pixels) accepted between an export and eager PyTorch.
BOX_TOLERANCE_PX = 1e-3
#: Largest score difference accepted.
SCORE_TOLERANCE = 1e-5


def detection_agreement(reference: Instances, exported: Instances) -> Dict:
    """
    Compare two detection lists detection by detection, in their order (both are sorted by score
    by the NMS).

    Returns:
        ``{"count", "exported_count", "same_classes", "max_box_diff_px", "max_score_diff",
        "agree"}``; the differences are None when the counts differ, and ``agree`` says whether
        the counts and classes are equal and the differences within :data:`BOX_TOLERANCE_PX` and
        :data:`SCORE_TOLERANCE`.
    """
    result = {"count": len(reference), "exported_count": len(exported), "same_classes": False,
              "max_box_diff_px": None, "max_score_diff": None, "agree": False}
    if len(reference) != len(exported):
        return result
    ref_boxes = reference.pred_boxes.tensor.detach().float().cpu()
    exp_boxes = torch.as_tensor(exported.pred_boxes.tensor).float().cpu()
    result["same_classes"] = bool(torch.equal(reference.pred_classes.cpu(), torch.as_tensor(exported.pred_classes).cpu()))
    zero = torch.zeros(())
    result["max_box_diff_px"] = float((ref_boxes - exp_boxes).abs().max() if len(reference) else zero)
    score_diff = (reference.scores.detach().float().cpu() - torch.as_tensor(exported.scores).float().cpu()).abs()
    result["max_score_diff"] = float(score_diff.max() if len(reference) else zero)
    result["agree"] = (
        result["same_classes"]
        and result["max_box_diff_px"] <= BOX_TOLERANCE_PX
        and result["max_score_diff"] <= SCORE_TOLERANCE
    )
    return result
