"""Tests of vfnet.analysis.seed_runs and tools/summarize_runs.py on run folders written by hand."""
import contextlib
import io
import json
import os
import tempfile
import unittest

from vfnet.analysis.seed_runs import (
    collect_seed_runs,
    paired_differences,
    seed_runs_markdown,
    suffix_pairs,
    summarize_seed_runs,
)

from vfnet_test_utils import load_tool


def write_run(root, folder, ap, ap50=50.0):
    os.makedirs(os.path.join(root, folder))
    with open(os.path.join(root, folder, "eval_metrics.json"), "w") as f:
        json.dump({"bbox": {"AP": ap, "AP50": ap50}}, f)


class SeedRunsTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        write_run(self.root, "atss_FL_seed1", 40.0, 58.0)
        write_run(self.root, "atss_FL_seed2", 42.0, 60.0)
        write_run(self.root, "atss_VFL_seed1", 45.0)
        write_run(self.root, "atss_VFL_seed2", 43.5)
        write_run(self.root, "retina_FL_seed1", 30.0)
        write_run(self.root, "retina_FL_seed3", 20.0)  # no VFL run of seed 3
        write_run(self.root, "retina_VFL_seed1", 25.0)
        write_run(self.root, "fovea_FL_seed1", 35.0)  # no VFL twin at all
        os.makedirs(os.path.join(self.root, "retina_VFL_seed2"))  # unfinished: no metrics yet

    def tearDown(self):
        self._tmp.cleanup()

    def test_collect(self):
        runs = collect_seed_runs(self.root)
        self.assertEqual(
            runs,
            {
                "atss_FL": {1: 40.0, 2: 42.0},
                "atss_VFL": {1: 45.0, 2: 43.5},
                "retina_FL": {1: 30.0, 3: 20.0},
                "retina_VFL": {1: 25.0},
                "fovea_FL": {1: 35.0},
            },
        )
        self.assertEqual(collect_seed_runs(self.root, "bbox/AP50")["atss_FL"], {1: 58.0, 2: 60.0})

    def test_summary(self):
        summaries = {s.name: s for s in summarize_seed_runs(collect_seed_runs(self.root))}
        self.assertEqual(list(summaries), ["atss_FL", "atss_VFL", "fovea_FL", "retina_FL", "retina_VFL"])
        atss_vfl = summaries["atss_VFL"]
        self.assertAlmostEqual(atss_vfl.mean, 44.25)
        self.assertEqual((atss_vfl.worst, atss_vfl.best), (43.5, 45.0))

    def test_pairs_and_their_notes(self):
        runs = collect_seed_runs(self.root)
        pairs = suffix_pairs(runs, "_FL", "_VFL")
        self.assertEqual(
            pairs, [("atss_FL", "atss_VFL"), ("fovea_FL", "fovea_VFL"), ("retina_FL", "retina_VFL")]
        )
        differences, notes = paired_differences(runs, pairs)
        self.assertEqual([d.name for d in differences], ["atss_FL -> atss_VFL", "retina_FL -> retina_VFL"])
        atss, retina = differences
        self.assertEqual(atss.values, {1: 5.0, 2: 1.5})
        self.assertAlmostEqual(atss.mean, 3.25)
        self.assertEqual(atss.worst, 1.5)
        self.assertEqual(retina.values, {1: -5.0})  # seed 3 has no VFL run: not compared
        self.assertEqual(
            notes,
            ["fovea_FL -> fovea_VFL: no runs of fovea_VFL", "retina_FL -> retina_VFL: seed 3 only in retina_FL"],
        )
        with self.assertRaisesRegex(ValueError, "two different"):
            suffix_pairs(runs, "_FL", "_FL")

    def test_markdown(self):
        runs = collect_seed_runs(self.root)
        differences, _ = paired_differences(runs, [("atss_FL", "atss_VFL")])
        text = seed_runs_markdown(summarize_seed_runs(runs), differences)
        self.assertIn("| atss_VFL | 1, 2 | 45.0, 43.5 | 44.2 | 43.5 | 45.0 |", text)
        self.assertIn("| atss_FL -> atss_VFL | 1, 2 | +5.0, +1.5 | +3.2 | +1.5 |", text)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "not a folder"):
            collect_seed_runs(os.path.join(self.root, "missing"))
        with self.assertRaisesRegex(ValueError, "TASK/KEY"):
            collect_seed_runs(self.root, "AP")
        with self.assertRaisesRegex(ValueError, "has no 'bbox/APx'"):
            collect_seed_runs(self.root, "bbox/APx")
        write_run(self.root, "no_seed_in_name", 1.0)
        with self.assertRaisesRegex(ValueError, "no_seed_in_name.*NAME_seedS"):
            collect_seed_runs(self.root)

    def test_non_finite_value(self):
        write_run(self.root, "broken_seed1", float("nan"))
        with self.assertRaisesRegex(ValueError, "broken_seed1.*nan"):
            collect_seed_runs(self.root)

    def test_tool(self):
        tool = load_tool("summarize_runs")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = tool.main(
                [self.root, "--suffix-pair", "_FL", "_VFL"]
                + ["--pair", "atss_FL", "atss_VFL", "--pair", "retina_FL", "atss_FL"]
            )
        self.assertEqual(rc, 0)
        text = out.getvalue()
        self.assertEqual(text.count("| atss_FL -> atss_VFL |"), 1)  # asked for twice, printed once
        self.assertIn("| retina_FL -> atss_FL | 1 | +10.0 | +10.0 | +10.0 |", text)
        self.assertIn("not compared: fovea_FL -> fovea_VFL: no runs of fovea_VFL", text)
        with tempfile.TemporaryDirectory() as empty, contextlib.redirect_stderr(io.StringIO()) as err:
            self.assertEqual(tool.main([empty]), 1)
        self.assertIn("no finished runs", err.getvalue())


if __name__ == "__main__":
    unittest.main()
