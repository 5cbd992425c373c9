"""
SWA as the reference runs it: the cyclic cosine lr (hand values), the running mean of the
parameters (arithmetic means of known weights, buffers untouched), SWAHook in Detectron2's
trainer (saving, evaluation, resume), the averaging of checkpoints (library and tool), and a tiny
end-to-end main run + SWA phase on the synthetic shapes on the CPU.
"""

import contextlib
import io
import math
import os
import tempfile
import unittest

import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import SimpleTrainer, hooks
from detectron2.solver import LRMultiplier

from vfnet.lr_scheduler import CyclicCosineParamScheduler
from vfnet.swa import CheckpointMismatchError, ParameterAverage, SWAHook, average_checkpoints, average_state_dicts
from vfnet_test_utils import REPO_ROOT, OneThreadTestCase, load_tool

REPO = REPO_ROOT


def run_tool(argv):
    """tools/average_checkpoints.py's main(argv), in this process: (exit code, stdout, stderr)."""
    tool = load_tool("average_checkpoints")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool.main(argv)
    return code, out.getvalue(), err.getvalue()


def lrs_by_iteration(multiplier, max_iter, base_lrs=(0.01,)):
    """The lr of each param group at every iteration, as Detectron2's LRScheduler hook sets it."""
    params = [nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=base_lrs[0])
    scheduler = LRMultiplier(optimizer, multiplier, max_iter)
    out = []
    for _ in range(max_iter):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


class CyclicCosineTest(unittest.TestCase):
    def test_hand_values(self):
        # 3 epochs of E = 10 iterations, base lr 0.01 (weights) and 0.02 (biases), end ratio 0.01:
        # lr(i) = 0.0001 + 0.0099 / 2 * (1 + cos(pi * (i mod 10) / 10)) for the weights
        lrs = lrs_by_iteration(CyclicCosineParamScheduler(1.0, 0.01, num_cycles=3), 30, base_lrs=(0.01, 0.02))
        last = 0.0001 + 0.00495 * (1 + math.cos(0.9 * math.pi))  # 0.000342270...
        self.assertAlmostEqual(last, 0.000342270244, places=12)
        for epoch in range(3):
            i = 10 * epoch
            self.assertAlmostEqual(lrs[i][0], 0.01, places=15)  # restart at the base lr
            self.assertAlmostEqual(lrs[i + 5][0], 0.00505, places=15)  # cos(pi / 2) = 0
            self.assertAlmostEqual(lrs[i + 9][0], last, places=15)
            self.assertAlmostEqual(lrs[i][1], 0.02, places=15)
            self.assertAlmostEqual(lrs[i + 9][1], 2 * last, places=15)
        for i in range(1, 10):  # strictly decreasing within an epoch
            self.assertLess(lrs[i][0], lrs[i - 1][0])

    def test_every_epoch_restarts_on_a_long_schedule(self):
        # VFNet-X on COCO: 18 epochs of 7330 iterations; i / (18 * 7330) * 18 must land on integers
        scheduler = CyclicCosineParamScheduler(1.0, 0.01, num_cycles=18)
        E, N = 7330, 18
        for k in range(N):
            self.assertEqual(scheduler(k * E / (N * E)), 1.0)
            end = scheduler((k * E + E - 1) / (N * E))
            self.assertAlmostEqual(end, 0.01 + 0.495 * (1 + math.cos(math.pi * (E - 1) / E)), places=12)

    def test_bad_cycles(self):
        with self.assertRaisesRegex(ValueError, "num_cycles"):
            CyclicCosineParamScheduler(1.0, 0.01, num_cycles=0)


def _set_params(model, value):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) * value + i)


class ParameterAverageTest(unittest.TestCase):
    def test_running_mean_of_known_weights(self):
        model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
        start_buffers = {k: v.clone() for k, v in model.named_buffers()}
        average = ParameterAverage(model)
        snapshots = []
        for n, value in enumerate([1.0, 4.0, -2.5]):
            _set_params(model, value)
            with torch.no_grad():
                model.train()(torch.randn(4, 3) * (n + 1))  # moves the BN statistics of the model
            snapshots.append({k: v.clone() for k, v in model.named_parameters()})
            average.update(model)
            self.assertEqual(average.num_averaged, n + 1)
            for name, p in average.module.named_parameters():
                mean = sum(s[name] for s in snapshots) / len(snapshots)
                torch.testing.assert_close(p, mean, rtol=0, atol=1e-6)
            for name, b in average.module.named_buffers():  # not averaged, not copied
                torch.testing.assert_close(b, start_buffers[name], rtol=0, atol=0)
        # e.g. the first weight: arange * (1 + 4 - 2.5) / 3 + 0
        torch.testing.assert_close(average.module[0].weight.flatten(), torch.arange(6.0) * 2.5 / 3)
        # the model itself is not touched by the average
        torch.testing.assert_close(model[0].weight.flatten(), torch.arange(6.0) * -2.5)

    def test_other_architecture_is_refused(self):
        average = ParameterAverage(nn.Linear(2, 2))
        with self.assertRaisesRegex(KeyError, "missing"):
            average.update(nn.Sequential(nn.Linear(2, 2)))


class _ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.register_buffer("counter", torch.zeros(1))

    def forward(self, batch):
        return {"loss": ((self.linear(batch) - 1.0) ** 2).mean()}


def _toy_data():
    g = torch.Generator().manual_seed(0)
    while True:
        yield torch.randn(4, 2, generator=g)


class SWAHookTest(unittest.TestCase):
    def train(self, model, output_dir, start_iter, max_iter, evaluated, epoch_ends):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = SimpleTrainer(model, _toy_data(), optimizer)

        def record(trainer):
            if (trainer.iter + 1) % 2 == 0:
                epoch_ends.append({k: v.detach().clone() for k, v in model.named_parameters()})

        def evaluate(averaged):
            evaluated.append({k: v.detach().clone() for k, v in averaged.named_parameters()})
            return {"bbox": {"AP": 10.0 * len(evaluated)}}

        trainer.register_hooks(
            [
                hooks.CallbackHook(after_step=record),
                SWAHook(iters_per_epoch=2, output_dir=output_dir, eval_function=evaluate),
            ]
        )
        trainer.train(start_iter, max_iter)
        return trainer

    def test_saves_evaluates_and_resumes(self):
        with tempfile.TemporaryDirectory() as out:
            model = _ToyModel()
            evaluated, ends = [], []
            trainer = self.train(model, out, 0, 4, evaluated, ends)
            self.assertEqual(len(ends), 2)
            expected = [ends[0], {k: (ends[0][k] + ends[1][k]) / 2 for k in ends[0]}]
            for epoch in (1, 2):
                saved = torch.load(os.path.join(out, f"swa_model_{epoch}.pth"), weights_only=True)
                self.assertEqual((saved["swa_epoch"], saved["num_averaged"]), (epoch, epoch))
                for k, v in expected[epoch - 1].items():
                    torch.testing.assert_close(saved["model"][k], v, rtol=0, atol=1e-7)
                    torch.testing.assert_close(evaluated[epoch - 1][k], v, rtol=0, atol=1e-7)
                self.assertIn("counter", saved["model"])
            self.assertEqual(trainer.storage.history("swa_bbox/AP").values(), [(10.0, 1), (20.0, 3)])
            self.assertFalse(os.path.exists(os.path.join(out, "last_checkpoint")))

            # Loadable by DetectionCheckpointer into the architecture.
            fresh = _ToyModel()
            DetectionCheckpointer(fresh).load(os.path.join(out, "swa_model_2.pth"))
            torch.testing.assert_close(fresh.linear.weight, expected[1]["linear.weight"], rtol=0, atol=1e-7)

            # Resume at iteration 2 (1 epoch done): the average of epoch 1 comes back from its file,
            # the next epoch end (from the resumed weights) is folded in as the second of two.
            resumed = _ToyModel()
            resumed.load_state_dict({**ends[0], "counter": torch.zeros(1)})
            evaluated2, ends2 = [], []
            self.train(resumed, out, 2, 4, evaluated2, ends2)
            saved = torch.load(os.path.join(out, "swa_model_2.pth"), weights_only=True)
            for k in ends[0]:
                torch.testing.assert_close(saved["model"][k], (ends[0][k] + ends2[0][k]) / 2, rtol=0, atol=1e-7)

    def test_resume_without_the_average_fails_clearly(self):
        with tempfile.TemporaryDirectory() as out:
            with self.assertRaisesRegex(FileNotFoundError, "swa_model_1.pth"):
                self.train(_ToyModel(), out, 3, 4, [], [])

    def test_bad_period(self):
        with self.assertRaisesRegex(ValueError, "iters_per_epoch"):
            SWAHook(iters_per_epoch=0, output_dir="")


def _state(scale, counter):
    return {
        "a.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * scale,
        "a.bias": torch.tensor([0.5, -1.0], dtype=torch.float64) * scale,
        "bn.num_batches_tracked": torch.tensor(counter),
    }


class AverageCheckpointsTest(unittest.TestCase):
    def test_mean_of_three_state_dicts(self):
        avg = average_state_dicts([_state(1.0, 10), _state(2.0, 20), _state(6.0, 30)])
        self.assertEqual(list(avg), ["a.weight", "a.bias", "bn.num_batches_tracked"])
        torch.testing.assert_close(avg["a.weight"], torch.tensor([[3.0, 6.0], [9.0, 12.0]]), rtol=0, atol=0)
        torch.testing.assert_close(avg["a.bias"], torch.tensor([1.5, -3.0], dtype=torch.float64), rtol=0, atol=0)
        self.assertEqual(avg["bn.num_batches_tracked"].item(), 30)  # integers: the last
        self.assertEqual(avg["a.weight"].dtype, torch.float32)

    def test_float64_accumulation(self):
        # float16 holds 60000 but not the sum 180000: the mean must not overflow
        big = [{"w": torch.full((2,), 60000.0, dtype=torch.float16)} for _ in range(3)]
        avg = average_state_dicts(big)
        self.assertEqual(avg["w"].dtype, torch.float16)
        self.assertEqual(avg["w"].tolist(), [60000.0, 60000.0])

    def test_mismatches_are_named(self):
        a, b = _state(1.0, 1), _state(2.0, 2)
        del b["a.bias"]
        with self.assertRaisesRegex(CheckpointMismatchError, r"b\.pth.*a\.bias"):
            average_state_dicts([a, b], names=["a.pth", "b.pth"])
        c = _state(1.0, 1)
        c["a.weight"] = torch.zeros(3, 2)
        with self.assertRaisesRegex(CheckpointMismatchError, r"a\.weight is \(3, 2\).*c\.pth.*\(2, 2\)"):
            average_state_dicts([a, c], names=["a.pth", "c.pth"])
        d = _state(1.0, 1)
        d["a.weight"] = d["a.weight"].half()
        with self.assertRaisesRegex(CheckpointMismatchError, "float16"):
            average_state_dicts([a, d])
        with self.assertRaisesRegex(ValueError, "nothing to average"):
            average_state_dicts([])

    def test_files_and_tool(self):
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, scale in enumerate((1.0, 2.0, 6.0)):
                paths.append(os.path.join(tmp, f"model_{i}.pth"))
                torch.save({"model": _state(scale, i), "optimizer": {"state": {}}, "iteration": i}, paths[-1])
            avg = average_checkpoints(paths)
            torch.testing.assert_close(avg["model"]["a.weight"], torch.tensor([[3.0, 6.0], [9.0, 12.0]]))

            out = os.path.join(tmp, "sub", "avg.pth")
            code, stdout, stderr = run_tool([*paths, "-o", out])
            self.assertEqual(code, 0, stderr)
            self.assertIn("3 checkpoints", stdout)
            model = nn.Module()
            model.a = nn.Linear(2, 2)
            DetectionCheckpointer(model).load(out)
            torch.testing.assert_close(model.a.weight, torch.tensor([[3.0, 6.0], [9.0, 12.0]]))
            torch.testing.assert_close(model.a.bias, torch.tensor([1.5, -3.0]))

            torch.save({"model": {"a.weight": torch.zeros(2, 2)}}, os.path.join(tmp, "other.pth"))
            code, _, stderr = run_tool([paths[0], os.path.join(tmp, "other.pth"), "-o", out])
            self.assertEqual(code, 2)
            self.assertIn("other.pth", stderr)
            self.assertIn("a.bias", stderr)
            code, _, stderr = run_tool([os.path.join(tmp, "nope.pth"), "-o", out])
            self.assertEqual(code, 2)
            self.assertIn("nope.pth", stderr)
            torch.save({"optimizer": {}}, os.path.join(tmp, "no_model.pth"))
            code, _, stderr = run_tool([os.path.join(tmp, "no_model.pth"), "-o", out])
            self.assertEqual(code, 2)
            self.assertIn("holds no model weights", stderr)


if __name__ == "__main__":
    unittest.main()


QUICKSTART = os.path.join(REPO, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")


def _register_micro_shapes(root):
    """4 training and 4 validation images of the synthetic shapes, registered as COCO datasets."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    from vfnet.data import CLASS_NAMES, generate_shapes_dataset

    names = []
    for split, seed in (("train", 5), ("val", 6)):
        name = f"swa_test_shapes_{split}"
        json_file = generate_shapes_dataset(root, split, 4, seed=seed, show_progress=False)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {"thing_classes": list(CLASS_NAMES)}, json_file, os.path.join(root, split))
        names.append(name)
    return names


class SWAOptionsTest(unittest.TestCase):
    def setUp(self):
        from vfnet.engine import load_config

        self.cfg = load_config(QUICKSTART, ["train.swa.enabled=True"])

    def test_defaults_and_checks(self):
        from vfnet.engine import load_config, swa_options

        self.assertIsNone(swa_options(load_config(QUICKSTART)))  # off by default
        swa = swa_options(self.cfg)
        self.assertEqual(
            swa,
            dict(enabled=True, only=False, start_from="best", epochs=18, iters_per_epoch=None, lr_end_ratio=0.01),
        )
        for override, error, message in (
            ("+train.swa.epoch=3", KeyError, "train.swa.epoch"),
            ("train.swa.epochs=0", ValueError, "epochs"),
            ("train.swa.iters_per_epoch=-2", ValueError, "iters_per_epoch"),
            ("train.swa.lr_end_ratio=2", ValueError, "lr_end_ratio"),
        ):
            from vfnet.engine import apply_overrides

            with self.assertRaisesRegex(error, message):
                swa_options(apply_overrides(load_config(QUICKSTART, ["train.swa.enabled=True"]), [override]))
        with self.assertRaisesRegex(ValueError, "enabled"):
            swa_options(load_config(QUICKSTART, ["train.swa.only=True"]))
        del self.cfg.dataloader.evaluator
        with self.assertRaisesRegex(ValueError, "dataloader.evaluator"):
            swa_options(self.cfg)

    def test_start_checkpoint_and_epoch_length(self):
        from vfnet.engine import swa_iters_per_epoch, swa_start_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            self.cfg.train.output_dir = tmp
            swa = dict(start_from="best", iters_per_epoch=None)
            with self.assertRaisesRegex(FileNotFoundError, "model_best.pth"):
                swa_start_checkpoint(self.cfg, swa)
            open(os.path.join(tmp, "model_final.pth"), "w").close()
            self.assertEqual(
                swa_start_checkpoint(self.cfg, dict(swa, start_from="last")), os.path.join(tmp, "model_final.pth")
            )
            with self.assertRaisesRegex(FileNotFoundError, "nope.pth"):
                swa_start_checkpoint(self.cfg, dict(swa, start_from=os.path.join(tmp, "nope.pth")))

            names = _register_micro_shapes(os.path.join(tmp, "shapes"))
            self.cfg.dataloader.train.dataset.names = names[0]
            self.cfg.dataloader.train.total_batch_size = 3
            self.assertEqual(swa_iters_per_epoch(self.cfg, swa), 2)  # ceil(4 images / 3)
            self.assertEqual(swa_iters_per_epoch(self.cfg, dict(swa, iters_per_epoch=7)), 7)


class ResumableBestCheckpointerTest(unittest.TestCase):
    def test_best_score_is_saved_with_the_trainer(self):
        from vfnet.engine import ResumableBestCheckpointer

        model = nn.Linear(2, 1)
        trainer = SimpleTrainer(model, _toy_data(), torch.optim.SGD(model.parameters(), lr=0.1))
        best = ResumableBestCheckpointer(1, DetectionCheckpointer(model), "bbox/AP")
        trainer.register_hooks([best])
        best.best_metric, best.best_iter = 41.5, 7
        state = trainer.state_dict()
        self.assertEqual(state["hooks"]["ResumableBestCheckpointer"], {"best_metric": 41.5, "best_iter": 7})

        trainer2 = SimpleTrainer(model, _toy_data(), torch.optim.SGD(model.parameters(), lr=0.1))
        best2 = ResumableBestCheckpointer(1, DetectionCheckpointer(model), "bbox/AP")
        trainer2.register_hooks([best2])
        trainer2.load_state_dict(state)
        self.assertEqual((best2.best_metric, best2.best_iter), (41.5, 7))


class SWAEndToEndTest(unittest.TestCase):
    """
    The quickstart's training loop with the tests' small VFNet on 4 + 4 synthetic images: a
    2-iteration main run (its evaluation keeps model_best.pth), then 2 SWA epochs of 2 iterations.
    """

    def setUp(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny convolutions: threads cost more than they give

    def tearDown(self):
        torch.set_num_threads(self.threads)

    def test_main_run_then_swa(self):
        from detectron2.config import LazyCall as L
        from detectron2.config import instantiate

        from vfnet.checkpoint import VFNetCheckpointer
        from vfnet.data import CLASS_NAMES
        from vfnet_test_utils import small_vfnet
        from vfnet.engine import do_train, load_config

        with tempfile.TemporaryDirectory() as tmp:
            train_name, val_name = _register_micro_shapes(os.path.join(tmp, "shapes"))
            out = os.path.join(tmp, "out")
            cfg = load_config(
                QUICKSTART,
                [
                    f"dataloader.train.dataset.names={train_name}",
                    f"dataloader.test.dataset.names={val_name}",
                    f"dataloader.evaluator.dataset_name={val_name}",
                    "dataloader.train.total_batch_size=1",
                    "dataloader.train.num_workers=0",
                    "dataloader.test.num_workers=0",
                    "train.amp.enabled=False",
                    "train.max_iter=2",
                    "train.eval_period=0",
                    "train.checkpointer.period=100",
                    "train.log_period=1",
                    f"train.output_dir={out}",
                    "train.swa.enabled=True",
                    "train.swa.epochs=2",
                    "train.swa.iters_per_epoch=2",
                ],
            )
            # the tests' small VFNet (FrozenBN); a 2-iteration model scores below 0.05
            cfg.model = L(small_vfnet)(num_classes=len(CLASS_NAMES), test_score_thresh=0.0)
            do_train(cfg)

            def load(name):
                return torch.load(os.path.join(out, name), map_location="cpu", weights_only=True)["model"]

            best = load("model_best.pth")  # the main run's only evaluation, kept by the best checkpointer
            end1, end2 = load("swa/model_0000001.pth"), load("swa/model_final.pth")  # SWA epoch ends
            swa1, swa2 = load("swa_model_1.pth"), load("swa_model_2.pth")
            model = instantiate(cfg.model)
            params = {name for name, _ in model.named_parameters()}
            self.assertEqual(set(swa2), set(best))
            self.assertEqual(set(swa1), set(best))

            def max_diff(a, b, names):
                return max(float((a[n].double() - b[n].double()).abs().max()) for n in names)

            buffers = set(best) - params
            self.assertTrue(buffers)  # FrozenBN statistics
            self.assertEqual(max_diff(swa1, end1, params), 0.0)  # epoch 1: a copy
            mean = {n: (end1[n].double() + end2[n].double()) / 2 for n in params}
            self.assertLess(max_diff(swa2, mean, params), 1e-6)  # epoch 2: the mean of both epoch ends
            self.assertEqual(max_diff(swa2, best, buffers), 0.0)  # buffers: those of the SWA start
            self.assertTrue(any(not torch.equal(end1[n], end2[n]) for n in params))  # SWA did train
            self.assertTrue(any(not torch.equal(best[n], end1[n]) for n in params))

            VFNetCheckpointer(model, require_head=True).load(os.path.join(out, "swa_model_2.pth"))
            with open(os.path.join(out, "metrics.json")) as f:
                log = f.read()
            self.assertEqual(log.count('"swa_bbox/AP"'), 2)  # both averages evaluated
            self.assertTrue(os.path.isfile(os.path.join(out, "swa_eval_metrics.json")))
            with open(os.path.join(out, "swa", "last_checkpoint")) as f:
                self.assertEqual(f.read().strip(), "model_final.pth")
            with open(os.path.join(out, "last_checkpoint")) as f:  # the main run's, not moved by SWA
                self.assertIn(f.read().strip(), ("model_final.pth", "model_best.pth"))

            # --resume after an interruption in SWA epoch 2: the main schedule is complete and
            # skipped; SWA goes on from its checkpoint of epoch 1 with the average of epoch 1.
            os.remove(os.path.join(out, "swa", "model_final.pth"))
            os.remove(os.path.join(out, "swa", "model_0000003.pth"))
            os.remove(os.path.join(out, "swa_model_2.pth"))
            with open(os.path.join(out, "swa", "last_checkpoint"), "w") as f:
                f.write("model_0000001.pth")
            do_train(cfg, resume=True)
            end2 = load("swa/model_final.pth")
            swa2 = load("swa_model_2.pth")
            mean = {n: (end1[n].double() + end2[n].double()) / 2 for n in params}
            self.assertLess(max_diff(swa2, mean, params), 1e-6)
            with open(os.path.join(out, "metrics.json")) as f:
                self.assertEqual(f.read().count('"swa_bbox/AP"'), 3)


class YacsSWATest(OneThreadTestCase):
    """SOLVER.SWA with the yacs Trainer: an SWA-only run of 2 epochs of 2 iterations from MODEL.WEIGHTS."""

    def test_swa_only_run(self):
        from detectron2.modeling import build_model

        from vfnet.engine import Trainer, load_config

        with tempfile.TemporaryDirectory() as tmp:
            train_name, val_name = _register_micro_shapes(os.path.join(tmp, "shapes"))
            yaml = os.path.join(REPO, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")
            cfg = load_config(
                yaml,
                [
                    f"DATASETS.TRAIN=('{train_name}',)",
                    f"DATASETS.TEST=('{val_name}',)",
                    "DATALOADER.NUM_WORKERS=0",
                    "SOLVER.IMS_PER_BATCH=1",
                    "SOLVER.MAX_ITER=4",
                    "SOLVER.CHECKPOINT_PERIOD=2",
                    "SOLVER.SWA.ENABLED=True",
                    "SOLVER.SWA.EPOCHS=2",
                    "MODEL.VFNET.SCORE_THRESH_TEST=0.0",
                    f"OUTPUT_DIR={tmp}/out",
                ],
            )
            start = os.path.join(tmp, "start.pth")
            torch.save({"model": build_model(cfg).state_dict()}, start)
            cfg.MODEL.WEIGHTS = start
            trainer = Trainer(cfg)
            self.assertIsInstance(trainer.scheduler._multiplier, CyclicCosineParamScheduler)
            self.assertIsInstance(trainer.optimizer, torch.optim.AdamW)  # SOLVER.OPTIMIZER of the quickstart
            self.assertEqual(trainer.optimizer.param_groups[0]["lr"], 0.001)  # SOLVER.BASE_LR, no warm-up
            trainer.resume_or_load(resume=False)
            trainer.train()

            def load(name):
                return torch.load(os.path.join(tmp, "out", name), map_location="cpu", weights_only=True)["model"]

            end1, end2, swa2 = load("model_0000001.pth"), load("model_final.pth"), load("swa_model_2.pth")
            params = {n for n, _ in trainer.model.named_parameters()}
            for n in params:
                torch.testing.assert_close(swa2[n], (end1[n] + end2[n]) / 2, rtol=1e-6, atol=1e-7)
            self.assertTrue(any(not torch.equal(end1[n], end2[n]) for n in params))
            self.assertIn("swa_bbox/AP", trainer.storage.latest())

        cfg.SOLVER.MAX_ITER = 5
        with self.assertRaisesRegex(ValueError, "must divide SOLVER.MAX_ITER"):
            Trainer.build_lr_scheduler(cfg, trainer.optimizer)
