import numpy as np

from imsim.data import load_dataset
from imsim.data.shapes import SHAPES, UNSEEN_COMBOS, class_combos, load_shapes


def test_deterministic_from_seed():
    a = load_shapes(seed=3, train_per_class=2, test_per_class=3)
    b = load_shapes(seed=3, train_per_class=2, test_per_class=3)
    c = load_shapes(seed=4, train_per_class=2, test_per_class=3)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.test.images, c.test.images)


def test_layout_and_split():
    ds = load_dataset("shapes")
    assert ds.test.images.shape == (10_000, 32, 32, 3) and ds.test.images.dtype == np.uint8
    assert np.bincount(ds.test.labels).tolist() == [100] * 100
    assert ds.split.seen == tuple(range(90)) and ds.split.unseen == tuple(range(90, 100))
    assert len(set(ds.class_names)) == 100


def test_unseen_classes_are_held_out_combinations():
    combos = class_combos()
    seen, unseen = combos[:90], combos[90:]
    assert unseen == list(UNSEEN_COMBOS)
    for shape, color in unseen:
        # Both factors of every unseen class occur in seen classes, the pair never does.
        assert any(s == shape for s, _ in seen) and any(c == color for _, c in seen)
        assert (shape, color) not in seen
    # Neither factor alone separates the unseen classes: each value occurs twice among them.
    assert sorted(np.bincount([s for s, _ in unseen]).tolist()) == [2] * 5
    assert sorted(np.bincount([c for _, c in unseen]).tolist()) == [2] * 5


def test_images_vary_within_a_class_and_show_the_shape():
    ds = load_shapes(train_per_class=1, test_per_class=20)
    red_triangle = class_combos().index((SHAPES.index("triangle"), 0))
    assert ds.class_names[red_triangle] == "red_triangle"
    imgs = ds.test.images[ds.test.labels == red_triangle].astype(np.float32)
    assert imgs.std(axis=0).mean() > 20  # nuisances: position, background, lighting, noise
    # The class's colour dominates a patch of every image.
    red = (imgs[..., 0] - imgs[..., 1:].max(axis=-1)) > 40
    assert (red.reshape(20, -1).sum(1) > 10).all()
