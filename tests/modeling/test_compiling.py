"""vfnet.compiling: the detectors' opt-in torch.compile of their backbone and head."""
import os
import unittest
from unittest import mock

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from vfnet.compiling import (
    COMPILE_MODES,
    CUDA_GRAPH_MODES,
    apply_compile_mode,
    check_compile_mode,
    compile_backbone_and_head,
)
from vfnet.engine.config import load_config
from vfnet.head_parts import spread_classifier_scores
from vfnet.ops import _extension
from vfnet_test_utils import REPO_ROOT, make_instances, num_threads, random_image, small_vfnet

QUICKSTART_YAML = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")
LAZY_CONFIGS = [os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")] + [
    os.path.join(REPO_ROOT, "configs", "VFL-Detectors", "Quickstart", f"{name}_R_18_narrow_shapes_cpu.py")
    for name in ("atss", "fovea", "reppoints", "retinanet")
]


def compile_calls(build):
    """(module, kwargs) of each nn.Module.compile call made while ``build()`` runs, and its result."""
    with mock.patch.object(torch.nn.Module, "compile", autospec=True) as compile_:
        model = build()
    return [(c.args[0], c.kwargs) for c in compile_.call_args_list], model


class CheckCompileModeTest(unittest.TestCase):
    def test_modes(self):
        self.assertIsNone(check_compile_mode(None, "VFNet"))
        self.assertIsNone(check_compile_mode("", "VFNet"))
        for mode in COMPILE_MODES:
            self.assertEqual(check_compile_mode(mode, "VFNet"), mode)
        with self.assertRaisesRegex(ValueError, r"ATSS: compile_mode must be None or one of \(.*'bogus'"):
            check_compile_mode("bogus", "ATSS")


class ApplyCompileModeTest(unittest.TestCase):
    def test_checks_then_compiles_backbone_and_head(self):
        model = small_vfnet()
        calls, mode = compile_calls(lambda: apply_compile_mode(model, "max-autotune"))
        self.assertEqual(mode, "max-autotune")
        self.assertEqual(calls, [(model.backbone, {"mode": "max-autotune"}), (model.head, {"mode": "max-autotune"})])
        for off in (None, ""):
            calls, mode = compile_calls(lambda: apply_compile_mode(model, off))
            self.assertEqual((calls, mode), ([], None))
        with self.assertRaisesRegex(ValueError, "^VFNet: compile_mode must be"):
            apply_compile_mode(model, "fast")


class CudaGraphStepTest(unittest.TestCase):
    def test_each_call_of_the_detector_begins_a_step_with_cuda_graphs(self):
        # Without it the head's compiled call, in inference, overwrote the backbone's outputs
        # (seen on an H100 with "reduce-overhead").
        self.assertEqual(CUDA_GRAPH_MODES, ("reduce-overhead", "max-autotune"))
        images = [{"image": random_image(128, 192, seed=1)}]
        for mode in COMPILE_MODES:
            with self.subTest(mode=mode):
                model = small_vfnet().eval()
                with mock.patch.object(torch.nn.Module, "compile", autospec=True):
                    compile_backbone_and_head(model, mode)
                with mock.patch.object(torch.compiler, "cudagraph_mark_step_begin") as mark, torch.no_grad():
                    model(images)
                    model(images)
                self.assertEqual(mark.call_count, 2 if mode in CUDA_GRAPH_MODES else 0)


class DetectorCompileModeTest(unittest.TestCase):
    def test_compiles_backbone_and_head_in_place(self):
        calls, model = compile_calls(lambda: small_vfnet(compile_mode="reduce-overhead"))
        self.assertEqual(model.compile_mode, "reduce-overhead")
        self.assertEqual(len(calls), 2)
        self.assertIs(calls[0][0], model.backbone)
        self.assertIs(calls[1][0], model.head)
        self.assertEqual([kwargs for _, kwargs in calls], [{"mode": "reduce-overhead"}] * 2)

    def test_off_by_default(self):
        calls, model = compile_calls(small_vfnet)
        self.assertEqual(calls, [])
        self.assertIsNone(model.compile_mode)

    def test_bad_mode_is_refused(self):
        with self.assertRaisesRegex(ValueError, "VFNet: compile_mode must be"):
            small_vfnet(compile_mode="fast")

    def test_parameter_names_unchanged(self):
        # Module.compile keeps the module in place: checkpoints load into either model.
        self.assertEqual(list(small_vfnet(compile_mode="default").state_dict()), list(small_vfnet().state_dict()))

    def test_yacs_key(self):
        cfg = load_config(QUICKSTART_YAML, [])
        self.assertEqual(cfg.MODEL.VFNET.COMPILE, "")
        for node in ("RETINANET", "ATSS", "FOVEA", "REPPOINTS"):
            self.assertEqual(cfg.MODEL[node].COMPILE, "", node)
        cfg = load_config(QUICKSTART_YAML, ["MODEL.VFNET.COMPILE", "max-autotune", "MODEL.DEVICE", "cpu"])
        calls, model = compile_calls(lambda: build_model(cfg))
        self.assertEqual([m for m, _ in calls], [model.backbone, model.head])
        self.assertEqual(calls[0][1], {"mode": "max-autotune"})

    def test_lazy_configs_of_every_detector(self):
        from detectron2.config import instantiate

        for path in LAZY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_config(path, ["model.compile_mode=default"])
                calls, model = compile_calls(lambda: instantiate(cfg.model))
                self.assertEqual([m for m, _ in calls], [model.backbone, model.head])


class CompiledModelTest(unittest.TestCase):
    """torch.compile on the small VFNet, CPU."""

    def tearDown(self):
        torch._dynamo.reset()

    def test_backbone_and_head_trace_to_one_graph_each(self):
        # Graph breaks would split CUDA graphs ("reduce-overhead") and cost host time. The ops'
        # first call on a device asks the dispatcher for their kernels: traced as a constant.
        model = small_vfnet()
        x = torch.randn(2, 3, 96, 128)
        for training in (False, True):
            model.train(training)
            with self.subTest(training=training), torch.set_grad_enabled(training), mock.patch.dict(
                _extension._NO_KERNEL_REASON, clear=True
            ):
                explained = torch._dynamo.explain(model.backbone)(x)
                self.assertEqual((explained.graph_count, explained.graph_break_count), (1, 0))
                features = model.backbone(x)
                features = [features[f] for f in model.head_in_features]
                explained = torch._dynamo.explain(model.head)(features)
                self.assertEqual((explained.graph_count, explained.graph_break_count), (1, 0), explained.break_reasons)

    def test_compiled_inference_matches_eager(self):
        # Inductor (C++ kernels, ~30 s on two cores): the star convs through their fake kernels.
        model = small_vfnet().eval()
        spread_classifier_scores(model, 0)
        images = [{"image": random_image(128, 192, seed=3)}]
        with torch.no_grad(), num_threads(2):
            eager = model(images)[0]["instances"]
            compile_backbone_and_head(model, "default")
            compiled = model(images)[0]["instances"]
        self.assertGreater(len(eager), 50)
        self.assertEqual(len(compiled), len(eager))
        torch.testing.assert_close(compiled.pred_boxes.tensor, eager.pred_boxes.tensor, rtol=0, atol=1e-3)
        torch.testing.assert_close(compiled.scores, eager.scores, rtol=0, atol=1e-5)
        self.assertTrue(torch.equal(compiled.pred_classes, eager.pred_classes))

    def test_compiled_training_step_matches_eager(self):
        # AOTAutograd (the ops' fake kernels and their backward through the autograd graph),
        # without Inductor's code generation.
        model = small_vfnet()
        batch = [
            {
                "image": random_image(128, 192, seed=4),
                "instances": make_instances((128, 192), [[8, 10, 60, 70], [40, 30, 120, 90]], [1, 3]),
            }
        ]
        params = [p for p in model.parameters() if p.requires_grad]

        def step():
            with EventStorage(0):
                losses = model(batch)
            return losses, torch.autograd.grad(sum(losses.values()), params)

        eager_losses, eager_grads = step()
        model.backbone.compile(backend="aot_eager")
        model.head.compile(backend="aot_eager")
        losses, grads = step()
        for name, value in eager_losses.items():
            torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6, msg=name)
        for a, b in zip(grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
    unittest.main()
