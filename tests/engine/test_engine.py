"""Config overrides, checkpoint checks, the CPU autocast trainer and DefaultPredictor."""
import math
import os
import re
import tempfile
import unittest

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, get_cfg
from detectron2.utils.events import EventStorage

from vfnet import add_vfnet_config
from vfnet.checkpoint import IncompatibleCheckpointError, VFNetCheckpointer
from vfnet.engine import AutocastTrainer, apply_overrides, load_config
from vfnet_test_utils import REPO_ROOT, OneThreadTestCase, small_vfnet

R50_PY = os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.py")
R50_YAML = os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.yaml")


class OverridesTest(unittest.TestCase):
    def test_known_key_and_alias(self):
        cfg = load_config(R50_PY, ["train.max_iter=7", "model.head.use_vfl=False", "model.head.stacked_convs=4"])
        self.assertEqual(cfg.train.max_iter, 7)
        self.assertFalse(cfg.model.use_vfl)
        self.assertEqual(cfg.model.head.stacked_convs, 4)

    def test_unknown_key_is_refused_with_suggestion(self):
        with self.assertRaises(KeyError) as ctx:
            load_config(R50_PY, ["train.max_iters=7"])
        self.assertIn("train.max_iters", str(ctx.exception))
        self.assertIn("train.max_iter", str(ctx.exception))

    def test_plus_adds_a_key(self):
        cfg = apply_overrides(LazyConfig.load(R50_PY), ["+train.note=hello"])
        self.assertEqual(cfg.train.note, "hello")

    def test_yaml(self):
        cfg = load_config(R50_YAML, ["MODEL.VFNET.NUM_CLASSES=3", "SOLVER.MAX_ITER", "10"])
        self.assertEqual((cfg.MODEL.VFNET.NUM_CLASSES, cfg.SOLVER.MAX_ITER), (3, 10))
        with self.assertRaises(KeyError):
            load_config(R50_YAML, ["MODEL.VFNET.NUM_CLASES=3"])

    def test_bad_files(self):
        with self.assertRaises(FileNotFoundError):
            load_config("nope.py")
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            with self.assertRaisesRegex(ValueError, "expected a LazyConfig"):
                load_config(f.name)


class CheckpointerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.model = small_vfnet()

    def tearDown(self):
        self.tmp.cleanup()

    def save(self, state):
        path = os.path.join(self.tmp.name, "ckpt.pth")
        torch.save({"model": state}, path)
        return path

    @staticmethod
    def other_weights():
        """The same small VFNet with every parameter and buffer moved away from ``small_vfnet()``'s."""
        model = small_vfnet()
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(torch.rand(tensor.shape, generator=generator) + 0.5)
        return model

    def assert_state_equal(self, model, expected, prefix=""):
        state = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
        self.assertTrue(state)
        differing = [name for name, value in state.items() if not torch.equal(value, expected[name])]
        self.assertEqual(differing, [], f"{len(differing)} of {len(state)} tensors differ from the expected weights")

    def test_own_checkpoint_loads(self):
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        path = self.save(saved)
        model = self.other_weights()
        self.assertFalse(torch.equal(model.head.cls_score.weight, saved["head.cls_score.weight"]))
        VFNetCheckpointer(model, require_head=True).load(path)
        self.assertEqual(set(model.state_dict()), set(saved))
        self.assert_state_equal(model, saved)  # every parameter and buffer now holds the checkpoint's

    def test_other_architecture(self):
        path = self.save({"roi_heads.box_head.fc1.weight": torch.zeros(2), "proposal_generator.x": torch.zeros(1)})
        with self.assertRaisesRegex(IncompatibleCheckpointError, r"\['proposal_generator', 'roi_heads'\]"):
            VFNetCheckpointer(self.model).load(path)

    def test_unconverted_mmdet(self):
        state = {"bbox_head.vfnet_cls.weight": torch.zeros(2), "backbone.conv1.weight": torch.zeros(1)}
        path = self.save(state)
        command = re.escape("convert it first with `python tools/convert_mmdet_checkpoint.py IN.pth OUT.pth`")
        with self.assertRaisesRegex(IncompatibleCheckpointError, f"^{re.escape(path)} is an MMDetection checkpoint; {command}$"):
            VFNetCheckpointer(self.model).load(path)
        # handed over in memory (fvcore's _load_model hook, no file): the message names "the checkpoint"
        with self.assertRaisesRegex(IncompatibleCheckpointError, "^the checkpoint is an MMDetection checkpoint"):
            VFNetCheckpointer(self.model)._load_model({"model": dict(state)})

    def test_defaults_as_detectron2(self):
        self.assertEqual(VFNetCheckpointer(self.model).save_dir, DetectionCheckpointer(self.model).save_dir)

    def test_backbone_only(self):
        backbone = {k: v.clone() for k, v in self.model.state_dict().items() if k.startswith("backbone.")}
        path = self.save(backbone)
        model = self.other_weights()
        head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
        VFNetCheckpointer(model).load(path)  # fine for training
        self.assert_state_equal(model, backbone, "backbone.")  # the backbone loaded ...
        self.assert_state_equal(model, head_before, "head.")  # ... and the head kept its own weights
        with self.assertRaisesRegex(IncompatibleCheckpointError, re.escape(
            "no weights for the VFNet head (head.*): it is not a trained VFNet checkpoint (its modules: ['backbone'])"
        )):
            VFNetCheckpointer(small_vfnet(), require_head=True).load(path)

    def test_messages_name_the_file_and_the_foreign_modules(self):
        path = self.save({"roi_heads.box_head.fc1.weight": torch.zeros(2), "head.x": torch.zeros(1)})
        with self.assertRaises(IncompatibleCheckpointError) as caught:
            VFNetCheckpointer(self.model).load(path)
        message = str(caught.exception)
        self.assertIn(path, message)
        self.assertIn("['roi_heads'] (e.g. ['roi_heads.box_head.fc1.weight'])", message)
        self.assertNotIn("'head'", message.split("(e.g.")[0])  # head is a module of VFNet
        self.assertRegex(message, "; it is a checkpoint of another architecture$")

    def test_foreign_module_message_lists_three_examples(self):
        # a Faster R-CNN checkpoint has hundreds of roi_heads keys: the message shows the first three
        names = [f"roi_heads.box_head.fc{i}.weight" for i in range(1, 6)]
        path = self.save({name: torch.zeros(1) for name in names})
        with self.assertRaisesRegex(IncompatibleCheckpointError, re.escape(f"(e.g. {names[:3]})")):
            VFNetCheckpointer(self.model).load(path)

    def test_unconverted_mmdet_neck_only(self):
        # backbone + neck keys alone (no bbox_head) are MMDetection's layout too
        path = self.save({"neck.lateral_convs.0.conv.weight": torch.zeros(2), "backbone.conv1.weight": torch.zeros(1)})
        with self.assertRaisesRegex(IncompatibleCheckpointError, f"{path} is an MMDetection checkpoint"):
            VFNetCheckpointer(self.model).load(path)

    def test_checkpoint_of_a_distributed_model(self):
        # saved from a DistributedDataParallel wrapper: every key starts with "module."; Detectron2
        # strips it, and the head check must see "module.head.*" as the head
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        path = self.save({"module." + k: v for k, v in saved.items()})
        model = self.other_weights()
        VFNetCheckpointer(model, require_head=True).load(path)
        self.assert_state_equal(model, saved)

    def test_checkpointables_reach_detectron2(self):
        # the positional checkpointables list reaches Detectron2: [] loads the model only
        model = small_vfnet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        path = os.path.join(self.tmp.name, "full.pth")
        torch.save({"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": [
            dict(g, lr=0.5, params=list(range(len(g["params"])))) for g in optimizer.state_dict()["param_groups"]
        ]}}, path)
        fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        VFNetCheckpointer(model, optimizer=fresh).load(path, [])
        self.assertEqual(fresh.param_groups[0]["lr"], 0.1)  # not loaded
        VFNetCheckpointer(model, optimizer=fresh).load(path, checkpointables=[])  # given by keyword
        self.assertEqual(fresh.param_groups[0]["lr"], 0.1)  # not loaded either
        VFNetCheckpointer(model, optimizer=fresh).load(path)
        self.assertEqual(fresh.param_groups[0]["lr"], 0.5)  # loaded

    def test_missing_file_and_urls(self):
        missing = os.path.join(self.tmp.name, "nope.pth")
        with self.assertRaises(FileNotFoundError) as caught:
            VFNetCheckpointer(self.model).load(missing)
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"checkpoint {missing} does not exist."), message)
        # what to do: the three ways to a usable checkpoint, with the tool or key to use
        for advice in (
            "(pretrained/*.pth) are made from the downloaded ImageNet weights with tools/convert_imagenet_checkpoint.py",
            "and reference checkpoints with tools/convert_mmdet_checkpoint.py (README)",
            'set train.init_checkpoint="" (MODEL.WEIGHTS "") to train from scratch',
        ):
            self.assertIn(advice, message)
        # a URL is not a local path: left to Detectron2's path manager (which cannot fetch it here)
        with self.assertRaises(Exception) as caught:
            VFNetCheckpointer(self.model).load("https://invalid.example/nope.pth")
        self.assertNotIn("does not exist. The configs", str(caught.exception))
        self.assertEqual(VFNetCheckpointer(self.model).load(""), {})  # no path: nothing to load, as Detectron2


class AutocastTrainerTest(unittest.TestCase):
    def _batches(self):
        from vfnet_test_utils import make_instances, random_image

        while True:
            yield [{"image": random_image(128, 160), "instances": make_instances((128, 160), [[10, 10, 60, 70]], [1])}]

    def test_bfloat16_step(self):
        model = small_vfnet()
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        trainer = AutocastTrainer(model, self._batches(), optimizer)
        before = model.head.cls_score.weight.detach().clone()
        # Inside the forward, convolutions compute in bfloat16 (autocast) from float32 weights.
        seen = {}

        def record_dtype(name):
            def hook(module, inputs, output):
                seen[name] = output.dtype

            return hook

        model.backbone.bottom_up.stem.conv1.register_forward_hook(record_dtype("stem"))
        model.head.cls_score.register_forward_hook(record_dtype("cls_score"))
        with EventStorage() as storage:
            trainer.iter = 0
            trainer.storage = storage
            trainer.run_step()
        self.assertEqual(seen, {"stem": torch.bfloat16, "cls_score": torch.bfloat16})
        self.assertEqual(model.head.cls_score.weight.dtype, torch.float32)
        self.assertFalse(torch.equal(before, model.head.cls_score.weight))
        self.assertTrue(math.isfinite(storage.history("total_loss").latest()))

    def test_non_finite_loss_stops_training(self):
        class Diverged(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(1))

            def forward(self, batch):
                return {"loss_cls": self.w * float("nan")}

        model = Diverged()
        trainer = AutocastTrainer(model, self._batches(), torch.optim.SGD(model.parameters(), lr=0.1))
        with EventStorage() as storage, self.assertRaisesRegex(FloatingPointError, "infinite or NaN"):
            trainer.iter = 0
            trainer.storage = storage
            trainer.run_step()


class YacsTrainingTest(OneThreadTestCase):
    """Two iterations of the quickstart's .yaml through the yacs Trainer on the tiny shapes split."""

    def test_quickstart_yaml_trains(self):
        from vfnet.engine import Trainer

        yaml = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(
                yaml,
                [
                    "DATASETS.TRAIN=('vfnet_shapes_train_tiny',)",
                    "DATASETS.TEST=()",  # no evaluation
                    "DATALOADER.NUM_WORKERS=0",
                    "SOLVER.IMS_PER_BATCH=2",
                    "SOLVER.MAX_ITER=2",
                    "SOLVER.WARMUP_ITERS=0",
                    f"OUTPUT_DIR={tmp}",
                ],
            )
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=False)
            before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
            trainer.train()
            self.assertEqual(trainer.iter, 2)  # Detectron2 leaves iter at max_iter after the loop
            history = trainer.storage.history
            for name in ("total_loss", "loss_cls", "loss_bbox_init", "loss_bbox_refine"):
                values = [v for v, _ in history(name).values()]
                self.assertEqual(len(values), 2, name)
                self.assertTrue(all(math.isfinite(v) and v > 0 for v in values), (name, values))
            changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
            for name in ("backbone.bottom_up.stem.conv1.weight", "backbone.fpn_output3.weight", "head.cls_score.weight",
                         "head.bbox_init_pred.weight", "head.bbox_refine_pred.weight"):
                self.assertTrue(name in changed, f"{name} did not change in training")
            self.assertTrue(os.path.isfile(os.path.join(tmp, "model_final.pth")))


class DefaultPredictorTest(unittest.TestCase):
    def test_yaml_predictor_on_bgr_image(self):
        from detectron2.engine import DefaultPredictor

        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml"))
        cfg.MODEL.VFNET.SCORE_THRESH_TEST = 0.0
        predictor = DefaultPredictor(cfg)
        image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        inst = predictor(image)["instances"]
        self.assertEqual(inst.image_size, (240, 320))  # back in the input's resolution
        self.assertTrue(0 < len(inst) <= 100)
        boxes = inst.pred_boxes.tensor
        self.assertGreater(boxes[:, 2].max().item(), 160)  # rescaled from the 120x160 model input
        self.assertLessEqual(boxes[:, 2].max().item(), 320)


class BuildPredictorTest(unittest.TestCase):
    def test_weights_from_the_config_overrides(self):
        # Detectron2's users give yacs weights as a "MODEL.WEIGHTS path" pair; KEY=VALUE works too,
        # and for a LazyConfig train.init_checkpoint=path. Each loads the checkpoint.
        from vfnet.predictor import build_predictor

        quickstart = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu")
        predictor, _ = build_predictor(quickstart + ".yaml", "")
        with torch.no_grad():
            predictor.model.head.cls_score.bias.copy_(torch.arange(6.0))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.pth")
            torch.save({"model": predictor.model.state_dict()}, path)
            for config, overrides in (
                (".yaml", ["MODEL.WEIGHTS", path]),
                (".yaml", [f"MODEL.WEIGHTS={path}"]),
                (".py", [f"train.init_checkpoint={path}"]),
            ):
                with self.subTest(config=config, overrides=overrides):
                    loaded, _ = build_predictor(quickstart + config, "", overrides)
                    self.assertTrue(torch.equal(loaded.model.head.cls_score.bias, torch.arange(6.0)))
            # An explicit checkpoint argument wins over the config's.
            loaded, _ = build_predictor(quickstart + ".yaml", path, ["MODEL.WEIGHTS", "missing.pth"])
            self.assertTrue(torch.equal(loaded.model.head.cls_score.bias, torch.arange(6.0)))


if __name__ == "__main__":
    unittest.main()
