"""
Tests of vfnet.analysis: box matching, the ranking (oracle) study on hand-made detections with
COCO APs worked out by hand, calibration bins and ECE, precision-recall curves, training curves,
and the pictures.
"""
import contextlib
import io
import json
import os
import tempfile
import unittest

import cv2
import numpy as np
import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_iou

from vfnet.analysis import (
    ORACLES,
    RankingAnalysis,
    apply_oracle,
    best_matching_ground_truth,
    detection_ious,
    expected_calibration_error,
    load_metrics,
    metric_series,
    precision_recall_curves,
    ranking_table_markdown,
    reliability_bins,
    run_ranking_analysis,
)
from vfnet.analysis.coco import coco_from_dict, coco_metrics, evaluate_coco
from vfnet.analysis.plots import plot_pr_curves, plot_reliability_diagram, plot_training_curves
from vfnet.analysis.reports import write_detection_analysis
from vfnet.analysis.training_curves import ap_keys, loss_keys

from vfnet_test_utils import load_tool, random_image, small_vfnet


def coco_dataset(images, annotations, categories):
    """images: [(id, width, height)]; annotations: [(image_id, category_id, [x, y, w, h], iscrowd)]."""
    return coco_from_dict(
        {
            "images": [{"id": i, "width": w, "height": h, "file_name": f"{i}.png"} for i, w, h in images],
            "annotations": [
                {"id": k + 1, "image_id": img, "category_id": cat, "bbox": list(b), "area": b[2] * b[3], "iscrowd": crowd}
                for k, (img, cat, b, crowd) in enumerate(annotations)
            ],
            "categories": [{"id": c, "name": n} for c, n in categories],
        }
    )


def candidates(image_size, boxes, classes, scores) -> Instances:
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.pred_classes = torch.tensor(classes, dtype=torch.long)
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    return inst


class MatchingTest(unittest.TestCase):
    def test_against_torchvision(self):
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(30, 2, generator=g) * 80
        boxes = torch.cat([xy, xy + 5 + torch.rand(30, 2, generator=g) * 40], dim=1)
        gxy = torch.rand(6, 2, generator=g) * 80
        gt = torch.cat([gxy, gxy + 5 + torch.rand(6, 2, generator=g) * 40], dim=1)
        gt_classes = torch.tensor([0, 1, 2, 0, 1, 2])
        iou, cls = best_matching_ground_truth(boxes, gt, gt_classes)
        expected = box_iou(boxes, gt)
        torch.testing.assert_close(iou, expected.max(dim=1).values)
        matched = expected.max(dim=1).values > 0
        self.assertTrue(matched.any() and (~matched).any())
        self.assertEqual(cls[matched].tolist(), gt_classes[expected.argmax(dim=1)][matched].tolist())
        self.assertTrue((cls[~matched] == -1).all())

        # class-aware: only the ground truth of the box's own class counts
        classes = torch.full((30,), 2)
        iou_c, cls_c = best_matching_ground_truth(boxes, gt, gt_classes, classes=classes)
        torch.testing.assert_close(iou_c, expected[:, [2, 5]].max(dim=1).values)
        self.assertTrue(((cls_c == 2) | (cls_c == -1)).all())

    def test_ties_no_ground_truth_and_bad_shapes(self):
        box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        gt = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, -10.0, 10.0, 10.0]])  # both IoU 0.5
        iou, cls = best_matching_ground_truth(box, gt, torch.tensor([4, 7]))
        self.assertEqual((iou.tolist(), cls.tolist()), ([0.5], [4]))
        iou, cls = best_matching_ground_truth(box, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        self.assertEqual((iou.tolist(), cls.tolist()), ([0.0], [-1]))
        with self.assertRaisesRegex(ValueError, "gt_boxes"):
            best_matching_ground_truth(box, torch.zeros(3), torch.zeros(3, dtype=torch.long))


class RankingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = small_vfnet(num_classes=2, test_nms_thresh=0.6).eval()

    def test_apply_oracle(self):
        scores, classes = torch.tensor([0.9, 0.2, 0.5]), torch.tensor([1, 0, 1])
        iou, match, own = torch.tensor([0.7, 0.0, 0.95]), torch.tensor([0, -1, 1]), torch.tensor([0.1, 0.0, 0.95])
        s, c = apply_oracle("model", scores, classes, iou, match, own)
        self.assertEqual((s.tolist(), c.tolist()), (scores.tolist(), [1, 0, 1]))
        s, c = apply_oracle("gt_class", scores, classes, iou, match, own)
        self.assertEqual((s.tolist(), c.tolist()), (scores.tolist(), [0, 0, 1]))  # unmatched: model's class
        s, c = apply_oracle("gt_iou", scores, classes, iou, match, own)
        self.assertEqual((s.tolist(), c.tolist()), (own.tolist(), [1, 0, 1]))
        s, c = apply_oracle("gt_class+iou", scores, classes, iou, match, own)
        self.assertEqual((s.tolist(), c.tolist()), (iou.tolist(), [0, 0, 1]))
        self.assertEqual((scores.tolist(), classes.tolist()), (torch.tensor([0.9, 0.2, 0.5]).tolist(), [1, 0, 1]))  # untouched
        with self.assertRaisesRegex(ValueError, "unknown oracle"):
            apply_oracle("gt_box", scores, classes, iou, match, own)

    def test_hand_made_table(self):
        # Ground truth: A (category 1 = class 0) [0, 0, 100, 100]; B (category 2 = class 1)
        # [120, 120, 180, 180]. Candidates:
        #   P  class 0, 0.3: A exactly;
        #   D  class 0, 0.9: [0, 0, 100, 72], IoU 0.72 with A (and with P: NMS at 0.6 merges them);
        #   W  class 0, 0.8: [120, 120, 180, 175], IoU 0.9167 with B: right box, wrong class;
        #   V  class 1, 0.7: [2, 0, 100, 100], IoU 0.98 with A: right box, wrong class;
        #   T  class 1, 0.1: [120, 120, 180, 170], IoU 0.8333 with B (0.909 with W).
        # COCO AP averages 10 IoU thresholds 0.50:0.95; IoU 0.72 passes 5, 0.8333 7, 0.9167 9.
        #   model:        class 0: D (P suppressed), then W: 50; class 1: V (miss) then T: 7 x 1/2 -> 35;  42.5
        #   gt_class:     W -> class 1, V -> class 0; class 0: D suppresses P and V: 50; class 1: W
        #                 suppresses T: 90                                                               -> 70
        #   gt_iou:       own-class IoUs P 1, D 0.72, W 0, V 0, T 0.8333; class 0: P: 100; class 1: T: 70  -> 85
        #   gt_class+iou: class 0: P (1.0) suppresses D, V: 100; class 1: W (0.9167) suppresses T: 90     -> 95
        coco = coco_dataset(
            [(7, 200, 200)], [(7, 1, [0, 0, 100, 100], 0), (7, 2, [120, 120, 60, 60], 0)], [(1, "a"), (2, "b")]
        )
        analysis = RankingAnalysis(coco, self.model.select_detections)
        boxes = [[0, 0, 100, 100], [0, 0, 100, 72], [120, 120, 180, 175], [2, 0, 100, 100], [120, 120, 180, 170]]
        classes, scores = [0, 0, 0, 1, 1], [0.3, 0.9, 0.8, 0.7, 0.1]
        analysis.add_image(7, candidates((200, 200), boxes, classes, scores), 200, 200)
        results = analysis.evaluate(per_class=True)
        self.assertEqual(list(results), list(ORACLES))
        expected = {"model": 42.5, "gt_class": 70.0, "gt_iou": 85.0, "gt_class+iou": 95.0}
        for oracle, ap in expected.items():
            self.assertAlmostEqual(results[oracle]["AP"], ap, places=4, msg=oracle)
        self.assertAlmostEqual(results["model"]["AP-b"], 35.0, places=4)
        self.assertAlmostEqual(results["gt_iou"]["AP-b"], 70.0, places=4)
        self.assertAlmostEqual(results["model"]["AP50"], 75.0, places=4)
        self.assertTrue(np.isnan(results["model"]["APs"]))  # no small ground truth: NaN, as COCOEvaluator
        table = ranking_table_markdown(results)
        self.assertIn("| `gt_class+iou` | ground truth | IoU with ground truth | 95.0 |", table)
        # The oracle works in the original image: the same candidates in a half-size input give the same table.
        half = RankingAnalysis(coco, self.model.select_detections)
        small = candidates((100, 100), (torch.tensor(boxes, dtype=torch.float32) / 2).tolist(), classes, scores)
        half.add_image(7, small, 200, 200)
        self.assertEqual({o: r["AP"] for o, r in half.evaluate().items()}, {o: r["AP"] for o, r in results.items()})

    def test_perfect_boxes_among_duplicates(self):
        # Every ground truth has an exact box among the candidates, plus higher-scored jittered
        # duplicates and some background boxes: with the IoU as the score, AP is exactly 100.
        g = np.random.default_rng(0)
        images, anns, all_cands = [], [], {}
        for image_id in (1, 2, 3):
            images.append((image_id, 200, 200))
            boxes, classes, scores = [], [], []
            for cell in range(4):  # one object per 100x100 quadrant: objects never overlap
                x0, y0 = 100 * (cell % 2) + g.uniform(5, 30), 100 * (cell // 2) + g.uniform(5, 30)
                w, h = g.uniform(30, 60), g.uniform(30, 60)
                cls = int(g.integers(0, 2))
                anns.append((image_id, cls + 1, [x0, y0, w, h], 0))
                boxes.append([x0, y0, x0 + w, y0 + h])
                classes.append(cls)
                scores.append(g.uniform(0.05, 0.4))
                for _ in range(5):
                    jitter = g.uniform(1, 8, size=4) * g.choice([-1, 1], size=4)
                    boxes.append([x0 + jitter[0], y0 + jitter[1], x0 + w + jitter[2], y0 + h + jitter[3]])
                    classes.append(cls)
                    scores.append(g.uniform(0.5, 1.0))
            for _ in range(5):
                x, y = g.uniform(0, 170, size=2)
                boxes.append([x, y, x + 30, y + 30])
                classes.append(int(g.integers(0, 2)))
                scores.append(g.uniform(0.05, 1.0))
            all_cands[image_id] = candidates((200, 200), boxes, classes, scores)
        coco = coco_dataset(images, anns, [(1, "a"), (2, "b")])
        analysis = RankingAnalysis(coco, self.model.select_detections)
        for image_id, cands in all_cands.items():
            analysis.add_image(image_id, cands, 200, 200)
        results = analysis.evaluate()
        self.assertAlmostEqual(results["gt_iou"]["AP"], 100.0, places=6)
        self.assertAlmostEqual(results["gt_class+iou"]["AP"], 100.0, places=6)
        self.assertLess(results["model"]["AP"], 90.0)  # the duplicates outrank the exact boxes

    def test_model_row_is_plain_inference(self):
        # The model row runs the model's own NMS and postprocessing: identical to model(inputs).
        model = small_vfnet(num_classes=2, test_score_thresh=0.0).eval()
        inputs = [
            {"image": random_image(128, 160, seed=s).to(torch.uint8), "height": 256, "width": 320, "image_id": s + 1}
            for s in range(2)
        ]
        coco = coco_dataset(
            [(1, 320, 256), (2, 320, 256)],
            [(1, 1, [10, 10, 50, 40], 0), (2, 2, [60, 30, 80, 90], 0), (2, 1, [0, 0, 30, 30], 0)],
            [(1, "a"), (2, "b")],
        )
        analysis = run_ranking_analysis(model, [inputs[:1], inputs[1:]], coco)
        with torch.no_grad():  # batches as the loader gives them (a batch of 2 may round differently)
            outputs = [model([x])[0] for x in inputs]
        expected = []
        for x, out in zip(inputs, outputs):
            for r in instances_to_coco_json(out["instances"], x["image_id"]):
                r["category_id"] += 1
                expected.append(r)
        self.assertGreater(len(expected), 20)
        self.assertEqual(analysis.detections["model"], expected)
        results = analysis.evaluate()
        np.testing.assert_equal(results["model"], coco_metrics(evaluate_coco(coco, expected)))  # NaN == NaN
        self.assertEqual(set(results), set(ORACLES))


class CalibrationTest(unittest.TestCase):
    def test_bins_and_ece_by_hand(self):
        scores = np.array([0.05, 0.15, 0.18, 0.95, 1.0, 0.1])
        ious = np.array([0.0, 0.3, 0.1, 0.8, 0.9, 0.2])
        bins = reliability_bins(scores, ious, num_bins=10)
        self.assertEqual([b["count"] for b in bins], [1, 3, 0, 0, 0, 0, 0, 0, 0, 2])
        self.assertAlmostEqual(bins[1]["mean_score"], (0.15 + 0.18 + 0.1) / 3)
        self.assertAlmostEqual(bins[1]["mean_iou"], 0.2)
        self.assertAlmostEqual(bins[9]["mean_score"], 0.975)
        self.assertTrue(np.isnan(bins[2]["mean_iou"]))
        # (1 x 0.05 + 3 x |0.2 - 0.14333| + 2 x |0.85 - 0.975|) / 6 = 0.47 / 6
        self.assertAlmostEqual(expected_calibration_error(bins), 0.47 / 6)
        two = reliability_bins(scores, ious, num_bins=2)
        self.assertEqual([b["count"] for b in two], [4, 2])
        self.assertTrue(np.isnan(expected_calibration_error(reliability_bins(np.zeros(0), np.zeros(0)))))
        with self.assertRaisesRegex(ValueError, r"\[0, 1\]"):
            reliability_bins(np.array([1.5]), np.array([0.5]))

    def test_detection_ious(self):
        coco = coco_dataset(
            [(1, 100, 100)],
            [(1, 1, [0, 0, 10, 10], 0), (1, 2, [20, 20, 10, 10], 0), (1, 1, [40, 40, 10, 10], 1)],
            [(1, "a"), (2, "b")],
        )
        dets = [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5], "score": 0.9},  # IoU 0.5
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.8},  # wrong class: 0
            {"image_id": 1, "category_id": 1, "bbox": [40, 40, 10, 10], "score": 0.7},  # on a crowd region: 0
            {"image_id": 1, "category_id": 1, "bbox": [5, 0, 10, 10], "score": 0.6},  # 50 / 150
        ]
        scores, ious = detection_ious(coco, dets)
        np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.6])
        np.testing.assert_allclose(ious, [0.5, 0.0, 0.0, 1 / 3], rtol=1e-6)
        with self.assertRaisesRegex(KeyError, "image_id 5"):
            detection_ious(coco, [dict(dets[0], image_id=5)])


class PrecisionRecallTest(unittest.TestCase):
    def test_hand_made_curve(self):
        # Two objects; detections by score: hit, miss, hit -> precision 1 up to recall 0.5, then 2/3.
        coco = coco_dataset(
            [(1, 200, 200)], [(1, 3, [0, 0, 10, 10], 0), (1, 3, [50, 50, 10, 10], 0)], [(3, "only"), (4, "absent")]
        )
        dets = [
            {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 3, "bbox": [100, 100, 10, 10], "score": 0.8},
            {"image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10], "score": 0.7},
        ]
        curves = precision_recall_curves(evaluate_coco(coco, dets))
        self.assertEqual([c["name"] for c in curves["categories"]], ["only"])  # no ground truth: left out
        recall = np.array(curves["recall"])
        for key in ("0.50", "0.75", "0.50:0.95"):
            precision = np.array(curves["categories"][0]["precision"][key])
            np.testing.assert_allclose(precision[recall < 0.49], 1.0)
            np.testing.assert_allclose(precision[recall > 0.51], 2 / 3)
        ap = curves["categories"][0]["ap"]["0.50:0.95"]
        self.assertAlmostEqual(ap, coco_metrics(evaluate_coco(coco, dets))["AP"], places=4)

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pr.png")
            figure = plot_pr_curves(curves, path)
            self.assertEqual(cv2.imread(path).shape[:2], (320, 300))  # 1 panel: 3.0 x (2.8 + 0.4) in at 100 dpi
            lines = figure.axes[0].get_lines()
            np.testing.assert_allclose(lines[0].get_ydata(), curves["categories"][0]["precision"]["0.50"])


class TrainingCurvesTest(unittest.TestCase):
    LINES = [
        {"iteration": 19, "total_loss": 3.0, "loss_cls": 2.0, "loss_bbox_init": 0.5, "loss_bbox_refine": 0.5, "lr": 0.01},
        {"iteration": 39, "total_loss": 2.0, "loss_cls": 1.0, "loss_bbox_init": 0.5, "loss_bbox_refine": 0.5, "lr": 0.02},
        {"iteration": 39, "bbox/AP": 10.0, "bbox/AP50": 20.0, "bbox/AP75": 5.0, "bbox/AP-circle": 3.0, "bbox/APs": 1.0},
        # resumed from iteration 20: iteration 39 again, written later
        {"iteration": 39, "total_loss": 2.5, "loss_cls": 1.5, "loss_bbox_init": 0.5, "loss_bbox_refine": 0.5, "lr": 0.02},
    ]

    def test_series_and_plot(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "metrics.json")
            with open(path, "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in self.LINES))
            records = load_metrics(path)
            self.assertEqual(metric_series(records, "total_loss"), ([19, 39], [3.0, 2.5]))
            self.assertEqual(metric_series(records, "bbox/AP"), ([39], [10.0]))
            self.assertEqual(loss_keys(records), ["total_loss", "loss_bbox_init", "loss_bbox_refine", "loss_cls"])
            self.assertEqual(ap_keys(records), ["bbox/AP", "bbox/AP50", "bbox/AP75"])

            png = os.path.join(tmp, "curves.png")
            figure = plot_training_curves(records, png)
            self.assertEqual(cv2.imread(png).shape[:2], (820, 650))  # 3 panels: (2.6 x 3 + 0.4) x 6.5 in
            losses, lr, ap = figure.axes[:3]
            self.assertEqual([line.get_label() for line in losses.get_lines()], loss_keys(records))
            self.assertEqual(list(losses.get_lines()[0].get_ydata()), [3.0, 2.5])
            self.assertEqual(list(lr.get_lines()[0].get_ydata()), [0.01, 0.02])
            self.assertEqual(list(ap.get_lines()[0].get_ydata()), [10.0])

            with open(path, "a") as f:
                f.write('{"iteration": 59, "total_loss": \n')
            with self.assertRaisesRegex(ValueError, "metrics.json:5: not a JSON line"):
                load_metrics(path)


class ReportTest(unittest.TestCase):
    def test_written_files(self):
        coco = coco_dataset([(1, 100, 100)], [(1, 1, [0, 0, 10, 10], 0)], [(1, "a")])
        dets = [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5], "score": 0.85},  # IoU 0.5
            {"image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "score": 0.25},  # IoU 0
        ]
        with tempfile.TemporaryDirectory() as tmp:
            out = write_detection_analysis(coco, dets, tmp, num_bins=4)
            with open(os.path.join(tmp, "calibration.json")) as f:
                written = json.load(f)
            self.assertAlmostEqual(written["ece"], 0.5 * abs(0.5 - 0.85) + 0.5 * abs(0.0 - 0.25))
            self.assertEqual([b["count"] for b in written["bins"]], [0, 1, 0, 1])
            self.assertAlmostEqual(out["pr_curves"]["metrics"]["AP50"], 100.0, places=6)
            for name in ("reliability.png", "pr_curves.png"):
                self.assertEqual(cv2.imread(os.path.join(tmp, name)).dtype, np.uint8)
            figure = plot_reliability_diagram(written, os.path.join(tmp, "r.png"))
            bars = figure.axes[0].patches
            self.assertEqual([round(b.get_height(), 6) for b in bars], [0.0, 0.5])
            self.assertEqual(cv2.imread(os.path.join(tmp, "r.png")).shape[:2], (650, 550))


class ToolsTest(unittest.TestCase):
    def test_analyze_detections_and_plot_training_curves(self):
        gt = {
            "images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "a"}],
        }
        dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5], "score": 0.85}]  # IoU 0.5
        with tempfile.TemporaryDirectory() as tmp:
            for name, obj in (("gt.json", gt), ("dets.json", dets)):
                with open(os.path.join(tmp, name), "w") as f:
                    json.dump(obj, f)
            args = ["--results", os.path.join(tmp, "dets.json"), "--gt-json", os.path.join(tmp, "gt.json")]
            with contextlib.redirect_stdout(io.StringIO()) as out:
                load_tool("analyze_detections").main(args + ["--output", os.path.join(tmp, "a")])
            self.assertIn("1 detections: AP 10.0, ECE 0.3500", out.getvalue())  # a hit at IoU 0.50 only: 1 of 10
            self.assertEqual(sorted(os.listdir(os.path.join(tmp, "a"))),
                             ["calibration.json", "pr_curves.json", "pr_curves.png", "reliability.png"])  # fmt: skip

            metrics = os.path.join(tmp, "metrics.json")
            with open(metrics, "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in TrainingCurvesTest.LINES))
            with contextlib.redirect_stdout(io.StringIO()):
                load_tool("plot_training_curves").main([metrics])
            self.assertEqual(cv2.imread(os.path.join(tmp, "training_curves.png")).shape[:2], (820, 650))

    def test_analyze_ranking_on_the_tiny_split(self):
        from detectron2.config import LazyConfig, instantiate

        from vfnet_test_utils import REPO_ROOT

        config = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            weights = os.path.join(tmp, "random.pth")
            torch.save({"model": instantiate(LazyConfig.load(config).model).state_dict()}, weights)
            args = ["--config-file", config, "--weights", weights, "--output", tmp, "--dataset", "vfnet_shapes_val_tiny",
                    "--max-images", "3", "model.test_score_thresh=0.0"]  # fmt: skip
            with contextlib.redirect_stdout(io.StringIO()) as out:
                results = load_tool("analyze_ranking").main(args)
            self.assertIn("| `gt_class+iou` | ground truth | IoU with ground truth |", out.getvalue())
            with open(os.path.join(tmp, "ranking.json")) as f:
                written = json.load(f)
            self.assertEqual((written["num_images"], written["dataset"]), (3, "vfnet_shapes_val_tiny"))
            self.assertEqual(list(written["results"]), list(ORACLES))
            self.assertEqual(written["results"]["model"]["AP"], results["model"]["AP"])
            with open(os.path.join(tmp, "coco_instances_results.json")) as f:
                self.assertEqual({d["image_id"] for d in json.load(f)}, {1, 2, 3})


if __name__ == "__main__":
    unittest.main()
