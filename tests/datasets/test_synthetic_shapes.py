"""The synthetic shapes dataset (vfnet.data.synthetic_shapes): determinism, COCO validity,
real occlusion, caching and Detectron2 registration. Tiny generations: runs in a few seconds."""
import json
import os
import shutil
import tempfile
import unittest
from collections import Counter

from vfnet.data.synthetic_shapes import (
    CLASS_NAMES,
    TRAIN_NAME,
    VAL_NAME,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    register_shapes_dataset,
)

N = 24


def _files(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


class SyntheticShapesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="vfnet_shapes_test_")
        cls.root_a = os.path.join(cls.tmp, "a")
        cls.json_a = generate_shapes_dataset(cls.root_a, "train", N, seed=3, show_progress=False)
        with open(cls.json_a) as f:
            cls.coco = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_deterministic(self):
        root_b = os.path.join(self.tmp, "b")
        json_b = generate_shapes_dataset(root_b, "train", N, seed=3, show_progress=False)
        with open(self.json_a, "rb") as fa, open(json_b, "rb") as fb:
            self.assertEqual(fa.read(), fb.read())
        images_a = _files(os.path.join(self.root_a, "train"))
        self.assertEqual(len(images_a), N)
        self.assertEqual(images_a, _files(os.path.join(root_b, "train")))

        # another seed, or another split of the same seed, gives other images
        root_c = os.path.join(self.tmp, "c")
        generate_shapes_dataset(root_c, "train", N, seed=4, show_progress=False)
        generate_shapes_dataset(root_c, "val", N, seed=3, show_progress=False)
        images_c = _files(os.path.join(root_c, "train"))
        self.assertEqual(sum(images_a[k] == images_c[k] for k in images_a), 0)
        images_val = _files(os.path.join(root_c, "val"))
        self.assertEqual(sum(images_a[k] == images_val[k] for k in images_a), 0)

    def test_coco_valid(self):
        from pycocotools.coco import COCO

        api = COCO(self.json_a)
        self.assertEqual(sorted(api.getCatIds()), list(range(1, len(CLASS_NAMES) + 1)))
        self.assertEqual([c["name"] for c in api.loadCats(api.getCatIds())], list(CLASS_NAMES))
        self.assertEqual(len(api.getImgIds()), N)
        images = {im["id"]: im for im in self.coco["images"]}
        for im in images.values():
            self.assertTrue(os.path.isfile(os.path.join(self.root_a, "train", im["file_name"])))
        anns = self.coco["annotations"]
        self.assertGreater(len(anns), 2 * N)
        self.assertEqual(len({a["id"] for a in anns}), len(anns))
        for a in anns:
            im = images[a["image_id"]]
            x, y, w, h = a["bbox"]
            self.assertGreater(w, 0)
            self.assertGreater(h, 0)
            self.assertGreaterEqual(x, 0)
            self.assertGreaterEqual(y, 0)
            self.assertLessEqual(x + w, im["width"] + 1e-6)
            self.assertLessEqual(y + h, im["height"] + 1e-6)
            self.assertEqual(a["iscrowd"], 0)
            # area = visible pixels: positive, within the box (up to anti-aliasing at its edges)
            self.assertGreater(a["area"], 0)
            self.assertLessEqual(a["area"], (w + 1) * (h + 1))
        # classes drawn uniformly: each gets a fair share
        counts = Counter(a["category_id"] for a in anns)
        mean = len(anns) / len(CLASS_NAMES)
        for k in range(1, len(CLASS_NAMES) + 1):
            self.assertGreater(counts[k], 0.4 * mean, counts)

    def test_occlusion_is_real(self):
        anns = self.coco["annotations"]
        vis = [a["visibility"] for a in anns]
        self.assertGreaterEqual(min(vis), 0.3 - 1e-3)  # the more occluded ones are dropped
        self.assertGreater(sum(v < 0.8 for v in vis), 0.03 * len(anns))
        by_image = {}
        for a in anns:
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
        overlapping = 0
        for boxes in by_image.values():
            for i in range(len(boxes)):
                for j in range(i):
                    (x0, y0, w0, h0), (x1, y1, w1, h1) = boxes[i], boxes[j]
                    overlapping += min(x0 + w0, x1 + w1) > max(x0, x1) and min(y0 + h0, y1 + h1) > max(y0, y1)
        self.assertGreater(overlapping, N // 2)

    def test_cache_and_registration(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        root = os.path.join(self.tmp, "reg")
        names = register_shapes_dataset(root, num_train=N, num_val=6, seed=0, show_progress=False)
        self.assertEqual(names, (TRAIN_NAME, VAL_NAME))
        mtime = os.path.getmtime(os.path.join(root, "train.json"))
        # idempotent, and reuses the generated files
        self.assertEqual(register_shapes_dataset(root, num_train=N, num_val=6, seed=0, show_progress=False), names)
        self.assertEqual(os.path.getmtime(os.path.join(root, "train.json")), mtime)

        dicts = DatasetCatalog.get(TRAIN_NAME)
        self.assertEqual(len(dicts), N)
        self.assertTrue(all("annotations" in d for d in dicts))
        self.assertTrue(os.path.isfile(dicts[0]["file_name"]))
        self.assertEqual(len(DatasetCatalog.get(VAL_NAME)), 6)
        meta = MetadataCatalog.get(TRAIN_NAME)
        self.assertEqual(list(meta.thing_classes), list(CLASS_NAMES))
        self.assertEqual(len(meta.thing_colors), len(CLASS_NAMES))
        self.assertEqual(meta.evaluator_type, "coco")
        self.assertEqual(meta.json_file, os.path.join(root, "train.json"))

        # an incomplete split (a lost image) or other parameters: regenerated
        os.remove(os.path.join(root, "val", "000000.jpg"))
        ensure_shapes_dataset(root, num_train=N, num_val=6, seed=0, show_progress=False)
        self.assertEqual(len(os.listdir(os.path.join(root, "val"))), 6)
        self.assertEqual(os.path.getmtime(os.path.join(root, "train.json")), mtime)
        register_shapes_dataset(root, num_train=N - 4, num_val=6, seed=0, show_progress=False)
        self.assertEqual(len(DatasetCatalog.get(TRAIN_NAME)), N - 4)
        with open(os.path.join(root, "manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["splits"]["train"]["num_images"], N - 4)

        # another root: re-registered there, without "already registered" errors
        other = os.path.join(self.tmp, "reg2")
        register_shapes_dataset(other, num_train=4, num_val=2, seed=1, show_progress=False)
        self.assertEqual(MetadataCatalog.get(VAL_NAME).image_root, os.path.join(other, "val"))
        self.assertEqual(len(DatasetCatalog.get(VAL_NAME)), 2)


if __name__ == "__main__":
    unittest.main()
