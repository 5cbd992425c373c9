#!/usr/bin/env python
"""
Draw VFNet's detections on images, folders of images, or a video, into an output folder.

    python tools/demo.py --config-file configs/Quickstart/vfnet_R_18_narrow_shapes_cpu.py \
        --weights output/quickstart/model_final.pth --input img1.jpg some_folder/ --output out/
    python tools/demo.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.yaml \
        --weights vfnet_R_50_FPN_1x.pth --video-input clip.mp4 --output out/

Images are written as ``OUTPUT/<name>.png``, a video as ``OUTPUT/<name>.mp4``.
"""
import argparse
import os
import sys

import cv2
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
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--confidence-threshold", type=float, default=0.3, help="draw detections above this score")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY=VALUE config overrides")
    args = parser.parse_args(argv)
    if not args.input and not args.video_input:
        parser.error("give --input images/folders or --video-input")
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


def run_video(predictor, metadata, path, args):
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise SystemExit(f"cannot open video {path}")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    count = 0
    with tqdm.tqdm(total=frames, desc="frames", unit="frame") as bar:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            instances = predictor(frame)["instances"]
            writer.write(draw_instances(frame[:, :, ::-1], instances, metadata, args.confidence_threshold)[:, :, ::-1])
            count += 1
            bar.update(1)
    video.release()
    writer.release()
    print(f"{count} frames with detections written to {out_path}")


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="vfnet")
    os.makedirs(args.output, exist_ok=True)
    predictor, metadata = build_predictor(args.config_file, args.weights, args.opts, args.device)
    if args.input:
        run_images(predictor, metadata, args.input, args)
    if args.video_input:
        run_video(predictor, metadata, args.video_input, args)


if __name__ == "__main__":
    main()
