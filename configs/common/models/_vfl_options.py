# Settings every VFL detector config here shares, spread into its `model` with ** so that they
# stay ordinary keys of it (`model.use_vfl=False`, `model.test_score_thresh=...` override them):
# the reference's Varifocal Loss (alpha 0.75, gamma 2, IoU-weighted targets), MMDetection's
# test-time selection (per level the pairs above 0.05, at most 1000; 100 detections an image),
# and the input the reference's checkpoints expect (RGB, normalised with ImageNet's mean/std).
VARIFOCAL_LOSS = dict(use_vfl=True, vfl_alpha=0.75, vfl_gamma=2.0, vfl_iou_weighted=True)
TEST_SELECTION = dict(test_score_thresh=0.05, test_topk_candidates=1000, max_detections_per_image=100)
IMAGENET_RGB_INPUT = dict(pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375], input_format="RGB")
