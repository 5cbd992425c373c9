"""yacs configuration of VFNet (for ``DefaultPredictor`` and ``.yaml`` configs)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_vfnet_config"]


def add_vfnet_config(cfg) -> None:
    """Add ``MODEL.VFNET`` (and VFNet's defaults elsewhere) to a Detectron2 config, in place;
    also the keys of the VFL detectors (``MODEL.ATSS``, ``MODEL.RETINANET.USE_VFL``...: see
    :func:`vfnet.detectors.add_vfl_detectors_config`)."""
    from .detectors.config import add_vfl_detectors_config

    add_vfl_detectors_config(cfg)

    # Res2Net bottom-up (build_vfnet_res2net_*_backbone); depth, norm, base width (STEM_OUT_CHANNELS),
    # out features and deformable stages come from MODEL.RESNETS.
    cfg.MODEL.RES2NET = CN()
    cfg.MODEL.RES2NET.SCALES = 4
    cfg.MODEL.RES2NET.BASE_WIDTH = 26

    # Optimizer parameter rules of vfnet.engine.Trainer: "mmdet" (vfnet.solver.mmdet_optimizer_params
    # with BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS / WEIGHT_DECAY, WEIGHT_DECAY_NORM / WEIGHT_DECAY) or
    # "detectron2" (Detectron2's get_default_optimizer_params).
    cfg.SOLVER.PARAM_RULES = "mmdet"
    # Optimizer (vfnet.solver.build_optimizer): "SGD" (MOMENTUM, NESTEROV) or "AdamW" (BETAS).
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)

    # Training augmentations beyond Detectron2's (vfnet.data.build_train_augmentations; VFNet-X):
    # INPUT.CROP keeps a box (re-drawn otherwise) and applies with probability PROB;
    # RESIZE_SCALES: (long, short) pairs of MMDetection's keep-ratio resize, replacing
    # MIN/MAX_SIZE_TRAIN when given; CUTOUT: holes of HOLE_SIZES (w, h) pixels.
    cfg.INPUT.CROP.PROB = 1.0
    cfg.INPUT.RESIZE_SCALES = []
    cfg.INPUT.RESIZE_SCALES_MODE = "range"
    cfg.INPUT.CUTOUT = CN()
    cfg.INPUT.CUTOUT.ENABLED = False
    cfg.INPUT.CUTOUT.N_HOLES = [5, 10]
    cfg.INPUT.CUTOUT.HOLE_SIZES = [[4, 4], [4, 8], [8, 4], [8, 8], [16, 8], [8, 16], [16, 16], [16, 32], [32, 16],
                                   [32, 32], [32, 48], [48, 32], [48, 48]]
    cfg.INPUT.CUTOUT.PROB = 0.5
    cfg.INPUT.CUTOUT.FILL_VALUE = 0

    # Test-time augmentation (vfnet.tta: TEST.AUG.ENABLED, or `tools/train_net.py --eval-only --tta`),
    # the reference's (vfnet_r50_fpn_1x_coco_tta.py): short sides MIN_SIZES, long sides at most
    # MAX_SIZES (one per scale; empty: MAX_SIZE for every scale, as Detectron2), and flipped copies.
    cfg.TEST.AUG.MIN_SIZES = (800, 900, 1000, 1200)
    cfg.TEST.AUG.MAX_SIZES = (1200, 1300, 1500, 1600)
    cfg.TEST.AUG.FLIP = True

    v = cfg.MODEL.VFNET = CN()
    v.NUM_CLASSES = 80
    v.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]

    # Head
    v.NUM_CONVS = 3  # stacked convs per tower
    v.FEAT_CHANNELS = 256
    v.NORM = "GN"
    v.DCN_ON_LAST_CONV = False
    v.GRADIENT_MUL = 0.1
    v.BBOX_NORM_TYPE = "reg_denom"  # or "stride"
    v.REG_DENOMS = [64, 128, 256, 512, 1024]
    v.PRIOR_PROB = 0.01
    # Fused kernels of vfnet._C: the star-shaped deformable convs (vfnet.ops.star_deform_conv) and
    # the Varifocal Loss (vfnet.ops.fused_varifocal_loss). False: the pure-PyTorch reference paths
    # (torchvision deform_conv2d with explicit offsets; the eager loss). Same results.
    v.FUSED_OPS = True
    # On the CPU, run the head on channels-last copies of the features (VFNetHead's
    # cpu_channels_last): faster at 256 channels, slower with few channels per GroupNorm group.
    v.CPU_CHANNELS_LAST = True
    # torch.compile the backbone and the head: "" (no), "default", "reduce-overhead", ... (vfnet.compiling)
    v.COMPILE = ""

    # Assignment
    v.USE_ATSS = True
    v.ATSS_TOPK = 9
    v.ANCHOR_SCALE = 8  # ATSS anchors are squares of ANCHOR_SCALE x stride
    v.REGRESS_RANGES = [[-1, 64], [64, 128], [128, 256], [256, 512], [512, 100000000]]
    v.CENTER_SAMPLING = False
    v.CENTER_SAMPLE_RADIUS = 1.5

    # Losses
    v.USE_VFL = True
    v.VFL_ALPHA = 0.75
    v.VFL_GAMMA = 2.0
    v.VFL_IOU_WEIGHTED = True
    v.FOCAL_LOSS_ALPHA = 0.25
    v.FOCAL_LOSS_GAMMA = 2.0
    v.LOSS_CLS_WEIGHT = 1.0
    v.LOSS_BBOX_INIT_WEIGHT = 1.5
    v.LOSS_BBOX_REFINE_WEIGHT = 2.0

    # Inference
    v.SCORE_THRESH_TEST = 0.05
    v.TOPK_CANDIDATES_TEST = 1000
    v.TOPK_CANDIDATES_MODE = "pairs"  # or "points" (the original VarifocalNet repository)
    v.NMS_TYPE = "nms"  # or "soft_nms"
    v.NMS_THRESH_TEST = 0.6
    v.SOFT_NMS_METHOD = "linear"
    v.SOFT_NMS_SIGMA = 0.5
    v.SOFT_NMS_MIN_SCORE = 0.001

    # Stochastic Weight Averaging (VFNet-X) in a yacs run: with ENABLED, the run is the SWA phase
    # alone, from MODEL.WEIGHTS (weights only): SOLVER.MAX_ITER = EPOCHS x iterations per epoch,
    # the lr restarting at SOLVER.BASE_LR every epoch and annealing to LR_END_RATIO x BASE_LR
    # (SOLVER.LR_SCHEDULER_NAME and the warm-up are not used), the running mean of the weights
    # saved as OUTPUT_DIR/swa_model_{epoch}.pth and evaluated at every epoch end.
    swa = cfg.SOLVER.SWA = CN()
    swa.ENABLED = False
    swa.EPOCHS = 18
    swa.LR_END_RATIO = 0.01
