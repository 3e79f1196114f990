"""P5: a training step with on-the-fly augmentation / without (goal: median <= 1.10).
P9: peak resident memory training on 40,000 synthetic patches / on 4,000 (goal <= 1.2).
P10: training steps per second streaming from disk / in memory (goal >= 0.9).

    python bench/bench_training.py [rounds]   # 5 scenes, 3 rounds of 2 timed epochs each
    python bench/bench_training.py --quick    # 1 scene, a depth-2 U-Net, 1 timed epoch;
                                              # P9 on 4,000 / 400 patches, P10 on 100:
                                              # checks that it runs, measures nothing

Real Amazon patches (128 x 128, 3 bands), U-Net depth 4 / 16 filters, batch 16: the
CPU-sized configuration of the example. ``train_unet`` (public API only) trains the same
model on the same patches with ``augmentation=True`` and ``augmentation=False``; the two
alternate, round after round, in the order with/without then without/with, so that a slow
spell of the shared machine hits both alike. A Keras callback times each epoch's training
steps (first step begun to last step ended: the validation pass is not in it); the first
epoch of every run (tracing, warm-up) is left out. Prints the median seconds per step of
each and the ratio of the medians, with the spread (lowest and highest epoch).

P9 and P10 train on synthetic patch sets (64 x 64, 3 bands uint8, cut with stride 16 from
one random scene by ``make_patches``; 1 % validation), a depth-2 U-Net, batch 16, each run
in a fresh process. P9: ``train_unet`` with its defaults (``stream="auto"``) on a set of
40,000 patches and on one of 4,000, stopped after the same number of steps (a callback),
the peak resident size (VmHWM) of each process, the two running side by side (a
process's peak does not depend on its neighbour's; both are XLA-compiled, being over
``XLA_MIN_PIXELS``) (``stream="auto"`` streams both on a
machine without a GPU; with one it holds the small set in memory; the full run also prints
both with ``stream=True``). P10: on a set of 1,024 patches,
``stream=True`` and ``stream=False`` alternate round after round; the median seconds per
step of the timed epochs (the first is left out), in memory / streaming.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from report import rss_kb  # noqa: E402

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


def synthetic_set(folder, n_patches, seed=0):
    """About ``n_patches`` patches of 64 x 64 x 3 uint8 (stride 16) from one random scene
    whose mask holds blobs of class 1 on background 0."""
    import numpy as np
    from affine import Affine
    from scipy import ndimage

    from rsunet import make_mask, make_patches, split_patches, write_raster

    side = int(round(n_patches ** 0.5))
    size = 64 + (side - 1) * 16
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.normal(size=(size, size)), 8) > 0.02
    image = (rng.integers(0, 60, (3, size, size)) + 120 * blobs).astype(np.uint8)
    grid = dict(transform=Affine(1, 0, 0, 0, -1, size), crs="EPSG:32633")
    write_raster(folder / "image.tif", image, **grid)
    write_raster(folder / "labels.tif", blobs[None].astype(np.uint8), **grid)
    mask = make_mask(folder / "image.tif", folder / "labels.tif", folder / "mask.tif")["path"]
    make_patches(folder / "image.tif", mask, folder / "p", size=64, stride=16, progress=False)
    split_patches(folder / "p", fractions=(0.99, 0.01), method="random", seed=0)
    return folder / "p"


def child(patches, out, stream, steps, epochs):
    """One training run in this process: prints its peak RSS and seconds per step as JSON."""
    import keras

    from rsunet import train_unet

    timer = step_timer()

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if steps and batch + 1 >= steps:
                self.model.stop_training = True

    train_unet(patches, out, depth=2, filters=8, epochs=epochs, batch_size=BATCH, patience=epochs + 1,
               stream=json.loads(stream), seed=0, overwrite=True, progress=False,
               callbacks=[timer] + ([Stop()] if steps else []))
    print(json.dumps(dict(peak_mb=rss_kb() / 1024, per_step=timer.per_step)))


def start_child(patches, out, stream, steps=0, epochs=1):
    return subprocess.Popen([sys.executable, __file__, "--child", str(patches), str(out), json.dumps(stream),
                             str(steps), str(epochs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_result(proc):
    out, err = proc.communicate()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return json.loads(out.strip().splitlines()[-1])


def in_child(patches, out, stream, steps=0, epochs=1):
    return child_result(start_child(patches, out, stream, steps, epochs))


def peaks_side_by_side(sets, tmp, stream, steps):
    """Each set's peak RSS (MB), its run in its own process; the runs go side by side,
    since a process's peak does not depend on its neighbour (P10 times, so runs alone)."""
    procs = {n: start_child(p, tmp / f"{stream}{n}.keras", stream, steps) for n, p in sets.items()}
    return {n: child_result(proc)["peak_mb"] for n, proc in procs.items()}


def memory_and_streaming(quick, rounds):
    """P9 and P10 (see the module's doc)."""
    small, large = (400, 4000) if quick else (4000, 40000)
    steps = 20 if quick else 100
    fits, epochs = (100, 2) if quick else (1024, 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {n: synthetic_set(tmp / str(n), n) for n in {small, large, fits}}
        measured = {small: sets[small], large: sets[large]}
        peak = peaks_side_by_side(measured, tmp, "auto", steps)
        streamed = {} if quick else peaks_side_by_side(measured, tmp, True, steps)
        per_step = {True: [], False: []}
        for r in range(rounds):
            for stream in ((True, False) if r % 2 == 0 else (False, True)):
                per_step[stream] += in_child(sets[fits], tmp / "s.keras", stream, 0, epochs)["per_step"][1:]
    print(f"\nsynthetic patches of 64x64x3 uint8, U-Net depth 2, 8 filters, batch {BATCH}")
    print(f"P9 peak RSS: {peak[large]:.0f} MB on {large} patches, {peak[small]:.0f} MB on {small} "
          f"({steps} steps each)")
    print(f"P9 ratio peak RSS {large} / {small} patches: {peak[large] / peak[small]:.3f} (goal <= 1.2)")
    if streamed:
        print(f"P9 both streamed (stream=True): {streamed[large]:.0f} / {streamed[small]:.0f} MB = "
              f"{streamed[large] / streamed[small]:.3f}")
    median = {k: statistics.median(t) for k, t in per_step.items()}
    print(f"P10 median s/step on {fits} patches: streaming {median[True]:.4f}, in memory {median[False]:.4f}")
    print(f"P10 ratio steps/s streaming / in memory: {median[False] / median[True]:.3f} (goal >= 0.9)")


def main(argv):
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]))
        return 0
    if "--p9" in argv:  # P9 and P10 only
        memory_and_streaming("--quick" in argv, 1 if "--quick" in argv else 3)
        return 0
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    rounds = int(argv[0]) if argv else 1 if quick else 3
    # 5 scenes: 220 training patches, 14 steps an epoch, 11 M pixels a run: over
    # XLA_MIN_PIXELS, so the full run times the XLA step the demo trains with
    n_scenes, stride, timed_epochs = (1, 128, 1) if quick else (5, 64, 2)
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
    memory_and_streaming(quick, 1 if quick else rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
