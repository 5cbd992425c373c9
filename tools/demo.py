#!/usr/bin/env python
"""
Draw VFNet's detections on images, folders of images, a video, or a webcam's stream.

    python tools/demo.py --config-file configs/Quickstart/vfnet_R_18_narrow_shapes_cpu.py \
        --weights output/quickstart/model_final.pth --input img1.jpg some_folder/ --output out/
    python tools/demo.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.yaml \
        --weights vfnet_R_50_FPN_1x.pth --video-input clip.mp4 --output out/
    python tools/demo.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.yaml \
        --weights vfnet_R_50_FPN_1x.pth --webcam

Images are written as ``OUTPUT/<name>.png``, a video as ``OUTPUT/<name>.mp4``. ``--webcam`` shows
the detections on camera ``--camera`` (default 0) in a window until Esc is pressed (or the camera
stops), as Detectron2's demo does; with ``--output`` the stream is also saved as
``OUTPUT/webcam.mp4``.
"""
import argparse
import os
import sys

import cv2
import numpy as np
import tqdm

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from detectron2.utils.logger import setup_logger

from vfnet.predictor import build_predictor, draw_instances, list_images


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", required=True, help="a .py (LazyConfig) or .yaml config")
    parser.add_argument("--weights", required=True, help="checkpoint to load")
    parser.add_argument("--input", nargs="*", default=[], help="image files or folders of images")
    parser.add_argument("--video-input", default="", help="a video file")
    parser.add_argument("--webcam", action="store_true", help="detect on a webcam's stream, shown in a window")
    parser.add_argument("--camera", type=int, default=0, help="camera index of --webcam (cv2.VideoCapture)")
    parser.add_argument("--output", default="", help="output folder (optional with --webcam only)")
    parser.add_argument("--confidence-threshold", type=float, default=0.3, help="draw detections above this score")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY=VALUE config overrides")
    args = parser.parse_args(argv)
    if not args.input and not args.video_input and not args.webcam:
        parser.error("give --input images/folders, --video-input or --webcam")
    if (args.input or args.video_input) and not args.output:
        parser.error("--input and --video-input need --output")
    return args


def run_images(predictor, metadata, paths, args):
    files = list_images(paths)
    if not files:
        raise SystemExit(f"no images found in {paths}")
    for path in tqdm.tqdm(files, desc="images", unit="img"):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read image {path}")
        instances = predictor(image)["instances"]
        drawn = draw_instances(image[:, :, ::-1], instances, metadata, args.confidence_threshold)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out, drawn[:, :, ::-1])
    print(f"{len(files)} images with detections written to {args.output}")


def annotated_frames(predictor, metadata, capture, confidence_threshold: float):
    """
    Frames of ``capture`` (anything with ``read() -> (ok, BGR frame)``, e.g. ``cv2.VideoCapture``)
    with their detections drawn, as BGR images, until ``read`` fails.
    """
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        instances = predictor(frame)["instances"]
        yield draw_instances(frame[:, :, ::-1], instances, metadata, confidence_threshold)[:, :, ::-1]


class LazyVideoWriter:
    """A ``cv2.VideoWriter`` opened with the size of the first frame written (drawn frames of small
    inputs are enlarged, see ``draw_instances``, and a writer silently drops frames of another size)."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps, self.writer, self.count = path, fps, None, 0

    def write(self, frame):
        if self.writer is None:
            height, width = frame.shape[:2]
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self.writer.isOpened():
                raise SystemExit(f"cannot write video {self.path}")
        self.writer.write(np.ascontiguousarray(frame))
        self.count += 1

    def release(self):
        if self.writer is not None:
            self.writer.release()


def run_video(predictor, metadata, path, args):
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise SystemExit(f"cannot open video {path}")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    writer = LazyVideoWriter(out_path, fps)
    drawn_frames = annotated_frames(predictor, metadata, video, args.confidence_threshold)
    try:
        for drawn in tqdm.tqdm(drawn_frames, total=frames, desc="frames", unit="frame"):
            writer.write(drawn)
    finally:
        video.release()
        writer.release()
    print(f"{writer.count} frames with detections written to {out_path}")


WINDOW_NAME = "VFNet detections (Esc to quit)"
ESC = 27


def run_webcam(predictor, metadata, args, capture=None, show=None, wait_key=None) -> int:
    """
    Show the detections on the webcam's frames in a window until Esc is pressed or the camera
    stops; with ``args.output``, also save them as ``OUTPUT/webcam.mp4``. ``capture``, ``show``
    (``(window, frame)``) and ``wait_key`` (``(milliseconds) -> key``) default to OpenCV's camera
    ``args.camera``, ``cv2.imshow`` and ``cv2.waitKey``. Returns the number of frames shown.
    """
    capture = capture if capture is not None else cv2.VideoCapture(args.camera)
    if not capture.isOpened():
        raise SystemExit(f"cannot open camera {args.camera}")
    show = show or cv2.imshow
    wait_key = wait_key or cv2.waitKey
    writer = LazyVideoWriter(os.path.join(args.output, "webcam.mp4"), 25.0) if args.output else None
    shown = 0
    try:
        for drawn in annotated_frames(predictor, metadata, capture, args.confidence_threshold):
            show(WINDOW_NAME, drawn)
            shown += 1
            if writer is not None:
                writer.write(drawn)
            if wait_key(1) & 0xFF == ESC:
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if show is cv2.imshow:
            cv2.destroyAllWindows()
    return shown


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="vfnet")
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    predictor, metadata = build_predictor(args.config_file, args.weights, args.opts, args.device)
    if args.input:
        run_images(predictor, metadata, args.input, args)
    if args.video_input:
        run_video(predictor, metadata, args.video_input, args)
    if args.webcam:
        run_webcam(predictor, metadata, args)


if __name__ == "__main__":
    main()
