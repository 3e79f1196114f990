"""Training step time with on-the-fly augmentation / without (goal: <= 1.10).

    python bench/bench_training.py [rounds]

Real Amazon patches (128 x 128, 3 bands), U-Net depth 4 / 16 filters, batch 16: the
CPU-sized configuration of the example. The same model trains for a fixed number of
steps from a pipeline with and without augmentation, interleaved, best of ``rounds``
(the machine is shared: ratios measured in one run, not absolute times). Also reports
the augmentation pipeline alone (no model) in batches per second, to show its headroom.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STEPS, BATCH = 12, 16


def patch_arrays(folder):
    from rsunet.patches import PatchSet, make_patches
    from rsunet.samples import make_mask
    from rsunet.training import _read_split

    root = SHARED / "amazon" / "train"
    images = sorted((root / "images").glob("*.tiff"))[:4]
    masks = [make_mask(i, root / "masks" / f"{i.stem}.png", folder / f"{i.stem}.tif",
                       classes={1: "forest", 2: "background"})["path"] for i in images]
    make_patches(images, masks, folder / "p", size=128, stride=64, progress=False)
    ps = PatchSet(folder / "p")
    return _read_split(ps, ps.index["patch_id"].tolist())


def main(rounds=3):
    import keras

    from rsunet import model as M
    from rsunet.augmentation import AugmentParams
    from rsunet.training import _band_stats, _train_dataset

    with tempfile.TemporaryDirectory() as tmp:
        x, y, v = patch_arrays(Path(tmp))
    scaling = np.ones((len(x), x.shape[-1]), np.float32), np.zeros((len(x), x.shape[-1]), np.float32)
    mean, std = _band_stats(x, v, scaling)
    keras.utils.set_random_seed(0)
    net = M.unet(3, 2, depth=4, filters=16)
    net.compile(keras.optimizers.Adam(1e-3), loss=M.make_loss("bce_dice"), metrics=M.metrics(2))
    settings = {"without": None, "with": AugmentParams()}
    epochs = 1 + rounds

    datasets = {k: _train_dataset(x, y, v, scaling, mean, std, a, BATCH, 0, 0, epochs, STEPS)
                for k, a in settings.items()}
    for ds in datasets.values():  # warm-up: the compiled step and both pipelines
        net.fit(ds, steps_per_epoch=STEPS, epochs=1, verbose=0, shuffle=False)
    times = {k: [] for k in settings}
    for _ in range(rounds):
        for k, ds in datasets.items():
            t0 = time.perf_counter()
            net.fit(ds, steps_per_epoch=STEPS, epochs=1, verbose=0, shuffle=False)
            times[k].append((time.perf_counter() - t0) / STEPS)
    pipe = {}
    for k, a in settings.items():
        ds = _train_dataset(x, y, v, scaling, mean, std, a, BATCH, 1, 0, 2, STEPS * 4)
        t0 = time.perf_counter()
        n = sum(1 for _ in ds)
        pipe[k] = n / (time.perf_counter() - t0)
    best = {k: min(t) for k, t in times.items()}
    print(f"patches: {len(x)} of 128x128x3; U-Net depth 4, 16 filters; batch {BATCH}; "
          f"{STEPS} steps x best of {rounds}")
    print(f"{'pipeline':<22}{'s / step':>10}{'pipeline alone, batches/s':>28}")
    for k in settings:
        print(f"{k + ' augmentation':<22}{best[k]:>10.3f}{pipe[k]:>28.1f}")
    print(f"\nratio with / without augmentation: {best['with'] / best['without']:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
