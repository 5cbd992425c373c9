"""
tools/demo.py's frame loops with a fake camera and a fake predictor: the webcam window loop
(Esc, the camera stopping, the saved stream), the video loop, and the argument checks.
"""
import argparse
import contextlib
import io
import os
import tempfile
import unittest

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from vfnet_test_utils import load_tool


def load_demo():
    return load_tool("demo")


demo = load_demo()


class FakeCapture:
    """cv2.VideoCapture's read/isOpened/release over a list of frames."""

    def __init__(self, frames, opened=True):
        self.frames = list(frames)
        self.opened = opened
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def release(self):
        self.released = True


def box_predictor(frame):
    """One detection, [8, 8, 40, 32], class 1, score 0.9, on any frame."""
    inst = Instances(frame.shape[:2])
    inst.pred_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 32.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([1])
    return {"instances": inst}


METADATA = MetadataCatalog.get("vfnet_test_demo_webcam").set(thing_classes=["a", "b"])


def black_frames(n):
    return [np.zeros((48, 64, 3), np.uint8) for _ in range(n)]


def frame_count(path):
    video = cv2.VideoCapture(path)
    count, size = 0, None
    while True:
        ok, frame = video.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    video.release()
    return count, size


class WebcamTest(unittest.TestCase):
    def setUp(self):
        # Detectron2's Visualizer draws each box in a colour drawn from numpy's global RNG, some
        # of them nearly black: seed it, so that the outline checked below does not depend on
        # the tests that ran before.
        np.random.seed(0)

    def test_until_escape_with_saved_stream(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = argparse.Namespace(camera=0, output=tmp, confidence_threshold=0.5)
            capture = FakeCapture(black_frames(5))
            shown, keys = [], iter([-1, 0x100 + 65, 27, -1, -1])  # no key, "A" with a modifier bit, Esc
            count = demo.run_webcam(
                box_predictor, METADATA, args, capture=capture,
                show=lambda window, frame: shown.append((window, frame)), wait_key=lambda ms: next(keys),
            )  # fmt: skip
            self.assertEqual(count, 3)
            self.assertTrue(capture.released)
            self.assertEqual(len(capture.frames), 2)  # stopped reading at Esc
            self.assertEqual({w for w, _ in shown}, {demo.WINDOW_NAME})
            for _, frame in shown:
                # 64x48 frames are drawn enlarged 7.5x; the box outline runs along y = 8 x 7.5 = 60
                self.assertEqual(frame.shape, (360, 480, 3))
                self.assertGreater(int(frame[57:64, 90:280].max()), 20)
                self.assertEqual(int(frame[300:, :].max()), 0)  # far from the box: still black
            self.assertEqual(frame_count(os.path.join(tmp, "webcam.mp4")), (3, (360, 480)))

    def test_camera_stops_and_closed_camera(self):
        args = argparse.Namespace(camera=0, output="", confidence_threshold=0.5)
        shown = []
        capture = FakeCapture(black_frames(2))
        count = demo.run_webcam(
            box_predictor, METADATA, args, capture=capture, show=lambda w, f: shown.append(f), wait_key=lambda ms: -1
        )
        self.assertEqual((count, len(shown), capture.released), (2, 2, True))
        with self.assertRaisesRegex(SystemExit, "cannot open camera 3"):
            demo.run_webcam(box_predictor, METADATA, argparse.Namespace(camera=3, output="", confidence_threshold=0.5),
                            capture=FakeCapture([], opened=False))  # fmt: skip

    def test_video_of_small_frames(self):
        with tempfile.TemporaryDirectory() as tmp:
            clip = os.path.join(tmp, "clip.mp4")
            writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
            for frame in black_frames(4):
                writer.write(frame)
            writer.release()
            out = os.path.join(tmp, "out")
            os.makedirs(out)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                demo.run_video(box_predictor, METADATA, clip, argparse.Namespace(output=out, confidence_threshold=0.5))
            # the drawn frames are larger than the input's: all of them must be in the output
            self.assertEqual(frame_count(os.path.join(out, "clip.mp4")), (4, (360, 480)))

    def test_arguments(self):
        base = ["--config-file", "c.py", "--weights", "w.pth"]
        args = demo.parse_args(base + ["--webcam", "--camera", "1", "model.test_score_thresh=0.1"])
        self.assertEqual((args.webcam, args.camera, args.output, args.opts), (True, 1, "", ["model.test_score_thresh=0.1"]))
        with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
            demo.parse_args(base + ["--input", "a.jpg"])
        self.assertIn("need --output", err.getvalue())
        with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
            demo.parse_args(base)
        self.assertIn("--webcam", err.getvalue())


if __name__ == "__main__":
    unittest.main()
