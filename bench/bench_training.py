"""P5: a training step with on-the-fly augmentation / without (goal: median <= 1.10).

    python bench/bench_training.py [rounds]   # 3 scenes, 3 rounds of 2 timed epochs each
    python bench/bench_training.py --quick    # 1 scene, a depth-2 U-Net, 1 timed epoch:
                                              # checks that it runs, measures nothing

Real Amazon patches (128 x 128, 3 bands), U-Net depth 4 / 16 filters, batch 16: the
CPU-sized configuration of the example. ``train_unet`` (public API only) trains the same
model on the same patches with ``augmentation=True`` and ``augmentation=False``; the two
alternate, round after round, in the order with/without then without/with, so that a slow
spell of the shared machine hits both alike. A Keras callback times each epoch's training
steps (first step begun to last step ended: the validation pass is not in it); the first
epoch of every run (tracing, warm-up) is left out. Prints the median seconds per step of
each and the ratio of the medians, with the spread (lowest and highest epoch).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BATCH = 16


def patch_set(folder, n_scenes, stride):
    import rasterio

    from rsunet import make_mask, make_patches, split_patches

    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    root = SHARED / "amazon" / "train"
    images = sorted((root / "images").glob("*.tiff"))[:n_scenes]
    masks = [make_mask(i, root / "masks" / f"{i.stem}.png", folder / f"{i.stem}.tif",
                       classes={1: "forest", 2: "background"})["path"] for i in images]
    make_patches(images, masks, folder / "p", size=128, stride=stride, progress=False)
    # a small validation set: its pass is not timed, but it costs wall time
    split_patches(folder / "p", fractions=(0.9, 0.1), method="random", seed=0)
    return folder / "p"


def step_timer():
    """A Keras callback collecting, per epoch, the seconds per training step."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.per_step = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.steps, self.t_end = time.perf_counter(), 0, None

        def on_train_batch_end(self, batch, logs=None):
            self.steps, self.t_end = self.steps + 1, time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.per_step.append((self.t_end - self.t0) / self.steps)

    return StepTimer()


def timed_run(patches, out, augmentation, epochs, depth=4, filters=16):
    from rsunet import train_unet

    timer = step_timer()
    train_unet(patches, out, depth=depth, filters=filters, epochs=epochs, batch_size=BATCH,
               patience=epochs + 1, augmentation=augmentation, seed=0, resume=False,
               overwrite=True, progress=False, callbacks=[timer])
    return timer.per_step[1:]  # the first epoch traces and warms up


def main(argv):
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    rounds = int(argv[0]) if argv else 1 if quick else 3
    n_scenes, stride, timed_epochs = (1, 128, 1) if quick else (3, 64, 2)
    net = dict(depth=2, filters=8) if quick else dict(depth=4, filters=16)
    if not (SHARED / "amazon" / "train").exists():
        print(f"no Amazon data under {SHARED} (set RSUNET_SHARED_DATA); nothing measured")
        return 1
    times = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        patches = patch_set(Path(tmp), n_scenes, stride)
        for r in range(rounds):
            order = ("with", "without") if r % 2 == 0 else ("without", "with")
            for k in order:
                times[k] += timed_run(patches, Path(tmp) / f"{k}.keras", k == "with",
                                      1 + timed_epochs, **net)
    median = {k: statistics.median(t) for k, t in times.items()}
    print(f"Amazon patches of 128x128x3 from {n_scenes} scene(s) (stride {stride}); U-Net depth "
          f"{net['depth']}, {net['filters']} filters; batch {BATCH}; {rounds} round(s) x "
          f"{timed_epochs} timed epoch(s) each, interleaved")
    print(f"{'pipeline':<22}{'median s/step':>14}{'lowest':>9}{'highest':>9}")
    for k, t in times.items():
        print(f"{k + ' augmentation':<22}{median[k]:>14.3f}{min(t):>9.3f}{max(t):>9.3f}")
    ratios = [a / b for a, b in zip(times["with"], times["without"])]
    print(f"\nP5 ratio with / without augmentation: {median['with'] / median['without']:.3f} "
          f"(goal <= 1.10; epoch by epoch {min(ratios):.2f} .. {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
