"""The quickstart's training data order follows its seed."""
import itertools
import unittest

from detectron2.data.samplers import TrainingSampler

from vfnet.data import build_seeded_train_loader


def _order(seed, batches=6):
    dataset = [{"index": i} for i in range(40)]
    loader = build_seeded_train_loader(
        dataset, mapper=lambda d: d["index"], total_batch_size=4, num_workers=0, seed=seed, aspect_ratio_grouping=False
    )
    return [list(b) for b in itertools.islice(iter(loader), batches)]


class SeededTrainLoaderTest(unittest.TestCase):
    def test_same_seed_same_order(self):
        first = _order(3)
        self.assertEqual(first, _order(3))
        self.assertNotEqual(first, _order(4))
        # a shuffled permutation, not the dataset's order
        flat = sum(first, [])
        self.assertEqual(len(set(flat)), len(flat))
        self.assertNotEqual(flat, sorted(flat))

    def test_order_is_detectron2_training_sampler_with_that_seed(self):
        for seed in (0, 3):  # 0 is a seed like any other
            with self.subTest(seed=seed):
                expected = list(itertools.islice(iter(TrainingSampler(40, seed=seed)), 24))
                self.assertEqual(sum(_order(seed), []), expected)

    def test_workers(self):
        dataset = [{"index": i} for i in range(8)]
        build = lambda **kw: build_seeded_train_loader(dataset, mapper=dict, total_batch_size=2, aspect_ratio_grouping=False, **kw)
        self.assertEqual(build(seed=1).num_workers, 0)  # default: in the main process
        self.assertEqual(build(seed=1, num_workers=2).num_workers, 2)

    def test_negative_seed_is_random(self):
        orders = {str(_order(-1, batches=3)) for _ in range(3)}
        self.assertGreater(len(orders), 1)


if __name__ == "__main__":
    unittest.main()
