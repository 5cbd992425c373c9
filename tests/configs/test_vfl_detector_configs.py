"""
The configs of the VFL detectors (configs/VFL-Detectors) and of the paper's ablation
(configs/Ablations): every file builds the model it names; the FL and VFL files differ only in
``use_vfl``; the .yaml twins build the .py files' models; the embedded-dataset variants share
the quickstart's data, optimizer, schedule and budget; and each of those trains (tiny split) -
RetinaNet (.py) and ATSS (.yaml) through tools/train_net.py with COCO evaluation, and
``DefaultPredictor`` with the ATSS .yaml.
"""
import glob
import json
import os
import tempfile
import unittest

import cv2
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from omegaconf import OmegaConf

from vfnet.engine import do_train, load_config
from vfnet_test_utils import REPO_ROOT, load_tool

COCO = {
    "retinanet": "RetinaNetVFL",
    "atss": "ATSS",
    "fovea": "FoveaBox",
    "reppoints_moment_GN": "RepPoints",
}
VFL_DIR = os.path.join(REPO_ROOT, "configs", "VFL-Detectors")
ABLATION_DIR = os.path.join(REPO_ROOT, "configs", "Ablations")
QUICKSTART = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")
TINY = [
    "dataloader.train.dataset.names=vfnet_shapes_train_tiny",
    "dataloader.test.dataset.names=vfnet_shapes_val_tiny",
    "dataloader.evaluator.dataset_name=vfnet_shapes_val_tiny",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.log_period=1",
    "train.checkpointer.period=100",
]


_PREVIOUS_THREADS = []


def setUpModule():
    # small models: one thread is as fast, and much steadier on a shared, loaded machine
    _PREVIOUS_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(1)


def tearDownModule():
    torch.set_num_threads(_PREVIOUS_THREADS.pop())


def _py_configs(directory):
    return sorted(f for f in glob.glob(os.path.join(directory, "**", "*.py"), recursive=True) if not os.path.basename(f).startswith("_"))


def _train_net():
    return load_tool("train_net")


class ConfigsBuildTest(unittest.TestCase):
    def test_every_config_builds_its_detector(self):
        expected = {**{f"{k}_{v}": c for k, c in COCO.items() for v in ("FL", "VFL")}}
        for path in _py_configs(VFL_DIR) + _py_configs(ABLATION_DIR):
            name = os.path.basename(path)[: -len(".py")]
            with self.subTest(name):
                cfg = LazyConfig.load(path)
                model = instantiate(cfg.model)
                key = name.replace("_R_50_FPN_1x", "")
                if key in expected:
                    self.assertEqual(type(model).__name__, expected[key])
                    self.assertEqual(model.use_vfl, key.endswith("_VFL"))
                    self.assertEqual(model.num_classes, 80)
                elif "vfnet" in name:
                    self.assertEqual(type(model).__name__, "VFNet")
                    self.assertEqual(model.use_vfl, "_VFL" in name)
                    self.assertEqual(type(model.head).__name__, "VFNetHead" if name.startswith("vfnet_VFL") else "VFNetAblationHead")
                    if name.startswith("vfnet_star"):
                        self.assertTrue(model.head.star_features)
                else:  # an embedded-dataset variant of a detector
                    self.assertEqual(model.num_classes, 6)

    def test_fl_and_vfl_files_differ_only_in_use_vfl(self):
        for name in COCO:
            with self.subTest(name):
                fl = OmegaConf.to_container(LazyConfig.load(os.path.join(VFL_DIR, f"{name}_FL_R_50_FPN_1x.py")), resolve=False)
                vfl = OmegaConf.to_container(LazyConfig.load(os.path.join(VFL_DIR, f"{name}_VFL_R_50_FPN_1x.py")), resolve=False)
                self.assertEqual((fl["model"].pop("use_vfl"), vfl["model"].pop("use_vfl")), (False, True))
                fl["train"].pop("output_dir"), vfl["train"].pop("output_dir")
                self.assertEqual(fl, vfl)

    def test_reference_recipe_settings(self):
        retina = LazyConfig.load(os.path.join(VFL_DIR, "retinanet_VFL_R_50_FPN_1x.py"))
        self.assertEqual(retina.model.loss_normalizer, "positives_per_image")
        self.assertTrue(retina.model.ignore_padding)
        self.assertEqual(retina.model.smooth_l1_beta, 0.0)
        self.assertFalse(retina.model.backbone.top_block.relu_before_p7)
        self.assertEqual(retina.model.backbone.top_block.in_feature, "res5")
        atss = LazyConfig.load(os.path.join(VFL_DIR, "atss_VFL_R_50_FPN_1x.py"))
        self.assertEqual(atss.model.backbone.top_block.in_feature, "p5")
        self.assertEqual(atss.lr_multiplier.warmup_factor, 0.001)
        rep = LazyConfig.load(os.path.join(VFL_DIR, "reppoints_moment_GN_VFL_R_50_FPN_1x.py"))
        self.assertEqual(rep.model.backbone.norm, "GN")
        for cfg in (retina, atss, rep):
            self.assertEqual(cfg.optimizer.lr, 0.01)
            # plain SGD (no paramwise_cfg in the reference's configs of these detectors)
            self.assertEqual((cfg.optimizer.params.bias_lr_mult, cfg.optimizer.params.bias_decay_mult), (1.0, 1.0))
            self.assertEqual(cfg.train.max_iter, 12 * 7330)  # 12 epochs of COCO at 16 images per iteration
            self.assertEqual((cfg.train.eval_period, cfg.train.checkpointer.period), (7330, 7330))
            self.assertEqual(cfg.train.init_checkpoint, "pretrained/R-50.pth")

    def test_yaml_twins_build_the_same_models(self):
        for name, cls in (("retinanet", "RetinaNetVFL"), ("atss", "ATSS")):
            with self.subTest(name):
                cfg = load_config(os.path.join(VFL_DIR, f"{name}_VFL_R_50_FPN_1x.yaml"), ["MODEL.DEVICE", "cpu"])
                from_yaml = build_model(cfg)
                from_py = instantiate(LazyConfig.load(os.path.join(VFL_DIR, f"{name}_VFL_R_50_FPN_1x.py")).model)
                self.assertEqual(type(from_yaml).__name__, cls)
                shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
                self.assertEqual(shapes(from_yaml), shapes(from_py))
                for attr in ("use_vfl", "num_classes", "test_nms_thresh", "test_topk_candidates", "test_score_thresh"):
                    self.assertEqual(getattr(from_yaml, attr), getattr(from_py, attr), attr)

    def test_embedded_variants_share_the_quickstart_data_and_recipe(self):
        # the quickstart's data, autocast and recipe (AdamW, cosine lr, 2000 iterations): the FL and
        # VFL runs of the table, and the ablation rows, differ from each other only in the model
        base = LazyConfig.load(QUICKSTART)
        self.assertEqual(base.optimizer._target_, torch.optim.AdamW)
        for path in _py_configs(os.path.join(VFL_DIR, "Quickstart")) + _py_configs(os.path.join(ABLATION_DIR, "Quickstart")):
            with self.subTest(os.path.basename(path)):
                cfg = LazyConfig.load(path)
                for key in ("optimizer", "lr_multiplier", "dataloader"):
                    self.assertEqual(OmegaConf.to_container(cfg[key]), OmegaConf.to_container(base[key]), key)
                self.assertEqual(cfg.train.max_iter, base.train.max_iter)
                self.assertEqual(cfg.train.amp.enabled, base.train.amp.enabled)
                self.assertNotEqual(cfg.train.output_dir, base.train.output_dir)


class EmbeddedDatasetTrainingTest(unittest.TestCase):
    """Each embedded-dataset config trains on the tiny split (two iterations)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.previous_datasets = os.environ.get("VFNET_DATASETS")
        os.environ["VFNET_DATASETS"] = os.path.join(cls.tmp.name, "datasets")

    @classmethod
    def tearDownClass(cls):
        if cls.previous_datasets is None:
            os.environ.pop("VFNET_DATASETS", None)
        else:
            os.environ["VFNET_DATASETS"] = cls.previous_datasets
        cls.tmp.cleanup()

    def test_two_iterations_each(self):
        # RetinaNet: test_train_net_evaluate_and_predict; VFNet (the ablation's last row): the
        # quickstart's own end-to-end test
        configs = [
            ("VFL-Detectors/Quickstart/atss_R_18_narrow_shapes_cpu.py", []),
            ("VFL-Detectors/Quickstart/fovea_R_18_narrow_shapes_cpu.py", []),
            ("VFL-Detectors/Quickstart/reppoints_R_18_narrow_shapes_cpu.py", ["model.use_vfl=False"]),
            ("Ablations/Quickstart/vfnet_raw_FL_R_18_narrow_shapes_cpu.py", []),
            ("Ablations/Quickstart/vfnet_raw_VFL_R_18_narrow_shapes_cpu.py", []),
            ("Ablations/Quickstart/vfnet_star_VFL_R_18_narrow_shapes_cpu.py", []),
        ]
        for path, extra in configs:
            with self.subTest(path):
                out = os.path.join(self.tmp.name, os.path.basename(path))
                overrides = TINY + extra + [f"train.output_dir={out}", "train.max_iter=2"]
                cfg = load_config(os.path.join(REPO_ROOT, "configs", path), overrides)
                del cfg.dataloader.evaluator  # training only (evaluation: the train_net tests)
                do_train(cfg)
                self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
                with open(os.path.join(out, "metrics.json")) as f:
                    records = [json.loads(line) for line in f]
                self.assertEqual(len(records), 2)
                self.assertTrue(all(torch.isfinite(torch.tensor(r["total_loss"])) for r in records))

    def test_train_net_evaluate_and_predict(self):
        train_net = _train_net()
        # RetinaNet+VFL (.py): 2 iterations, COCO evaluation at the end
        out = os.path.join(self.tmp.name, "retinanet")
        config = os.path.join(VFL_DIR, "Quickstart", "retinanet_R_18_narrow_shapes_cpu.py")
        args = ["--config-file", config, *TINY, f"train.output_dir={out}", "model.test_score_thresh=0.0", "train.max_iter=2"]
        train_net.main(train_net.argument_parser().parse_args(args))
        self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
        with open(os.path.join(out, "eval_metrics.json")) as f:
            self.assertIn("AP", json.load(f)["bbox"])

        # ATSS (.yaml twin), narrowed to the quickstart's model: 1 iteration, evaluation at the end
        out = os.path.join(self.tmp.name, "atss_yaml")
        yaml_narrow = [
            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.BACKBONE.FREEZE_AT", "0",
            "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.STEM_OUT_CHANNELS", "32", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
            "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ATSS.FEAT_CHANNELS", "64",
            "MODEL.ATSS.NUM_CONVS", "2", "MODEL.ATSS.NUM_CLASSES", "6", "MODEL.ATSS.SCORE_THRESH_TEST", "0.0",
            "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "160",
            "DATASETS.TRAIN", "('vfnet_shapes_train_tiny',)", "DATASETS.TEST", "('vfnet_shapes_val_tiny',)",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out,
        ]
        yaml = os.path.join(VFL_DIR, "atss_VFL_R_50_FPN_1x.yaml")
        train_net.main(train_net.argument_parser().parse_args(["--config-file", yaml, *yaml_narrow]))
        with open(os.path.join(out, "eval_metrics.json")) as f:
            self.assertIn("AP", json.load(f)["bbox"])

        # DefaultPredictor with the .yaml twin and the weights it trained
        cfg = load_config(yaml, yaml_narrow + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")])
        predictor = DefaultPredictor(cfg)
        image = cv2.imread(DatasetCatalog.get("vfnet_shapes_val_tiny")[0]["file_name"])
        instances = predictor(image)["instances"]
        self.assertEqual(tuple(instances.image_size), image.shape[:2])
        self.assertTrue(0 < len(instances) <= 100)


if __name__ == "__main__":
    unittest.main()
