"""Benchmarks of predict_raster on a dask cluster (issue 15). Ratios measured in one run.

P7  the distributed path with 1 worker / the single-process path on the same work, both
    in the same worker process (one thread, the same TensorFlow threads), so the ratio is
    the cluster's overhead: scheduling, shipping arguments, the partial files of many
    scenes (goal <= 1.15). Interleaved, best of the repeats.
P8  throughput with 2 workers / 1 worker over N scenes with a per-pixel-heavy model (1x1
    convolutions, 64 filters; goal >= 1.6 on 2 cores). Interleaved, best of the repeats.
P8b a worker's peak RSS mapping one large scene / one small scene (the scene cut into
    blocks; goal: flat, <= 1.25), the peak reset before each (Linux /proc/self/clear_refs).

Public API only (rsunet.predict_raster, rsunet.cluster.local_cluster); the clusters are
LocalClusters on loopback. tests/test_bench.py runs the quick mode in CI.

    python bench/bench_distributed.py          # about 5-10 minutes on 2 cores
    python bench/bench_distributed.py --quick  # small scenes, one repeat: checks it runs
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import bench_prediction as bp  # noqa: E402  (its synthetic scenes)
from report import print_ratios, rss_kb  # noqa: E402

TMP = Path(tempfile.gettempdir()) / "rsunet-bench-distributed"
FULL = dict(scenes=8, size=1024, memory=(2048, 8192), repeat=3)
QUICK = dict(scenes=2, size=256, memory=(256, 512), repeat=1)  # checks that it runs
KW = dict(window=256, overlap=32, batch_size=4, overwrite=True, progress=False)


def heavy_model(path):
    """A per-pixel-heavy model: three 1x1 convolutions, 64 filters, saved for the workers."""
    import keras
    import numpy as np

    if path.exists():
        return path
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(64, 1, activation="relu")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu")(x)
    out = keras.layers.Conv2D(2, 1, activation="softmax")(x)
    model = keras.Model(inp, out)
    model.predict(np.zeros((1, 8, 8, 3), np.float32), verbose=0)
    model.save(path)
    return path


def _local_run(model, scenes, out):
    """The single-process path, run inside a worker (called through client.submit)."""
    from rsunet import predict_raster

    t = time.perf_counter()
    predict_raster(model, scenes, out, **KW)
    return time.perf_counter() - t


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv):
    sizes = QUICK if "--quick" in argv else FULL
    from rsunet import predict_raster
    from rsunet.cluster import local_cluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # no INFO lines at shutdown
    TMP.mkdir(parents=True, exist_ok=True)
    model = str(heavy_model(TMP / "heavy.keras"))
    scenes = [str(bp.synthetic_scene(TMP / f"scene_{sizes['size']}_{i}.tif", sizes["size"]))
              for i in range(sizes["scenes"])]
    one, two = local_cluster(1, dashboard=False), local_cluster(2, dashboard=False)
    try:
        def on_one():
            return predict_raster(model, scenes, TMP / "out1", cluster=one, **KW)

        def on_two():
            return predict_raster(model, scenes, TMP / "out2", cluster=two, **KW)

        def local_in_worker():
            return one.submit(_local_run, model, scenes, str(TMP / "out0"), pure=False).result()

        for fn in (on_one, on_two, local_in_worker):  # warm up: models loaded, graphs traced
            fn()
        best = dict(local=float("inf"), one=float("inf"), two=float("inf"))
        for _ in range(sizes["repeat"]):  # interleaved: a slow spell hits every side
            best["local"] = min(best["local"], local_in_worker())
            best["one"] = min(best["one"], timed(on_one))
            best["two"] = min(best["two"], timed(on_two))
        peaks = []
        for size in sizes["memory"]:
            scene = str(bp.synthetic_scene(TMP / f"big_{size}.tif", size))
            one.run(rss_kb, "VmHWM:", True)
            predict_raster(model, scene, TMP / f"mem_{size}.tif", cluster=one, **KW)
            peaks.append(list(one.run(rss_kb).values())[0])
    finally:
        for client in (one, two):
            cluster = client.cluster
            client.close()
            cluster.close()
    pixels = sizes["scenes"] * sizes["size"] ** 2 / 1e6
    small, big = sizes["memory"]
    rows = [
        ("P7", f"distributed path, 1 worker / local path in that worker, {sizes['scenes']} "
               f"scenes {sizes['size']}^2", best["one"] / best["local"], "<= 1.15",
         f"{best['one']:.2f} s / {best['local']:.2f} s"),
        ("P8", f"throughput 2 workers / 1 worker, {pixels:.1f} Mpixel, 1x1 64-filter model",
         best["one"] / best["two"], ">= 1.6",
         f"{pixels / best['two']:.2f} / {pixels / best['one']:.2f} Mpixel/s"),
        ("P8b", f"worker peak RSS, one scene {big}^2 / {small}^2 (blocks)",
         peaks[1] / peaks[0], "<= 1.25", f"{peaks[1] / 1024:.0f} MB / {peaks[0] / 1024:.0f} MB"),
    ]
    print_ratios(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
