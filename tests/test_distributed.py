"""predict_raster on a dask cluster: the bytes of one process, whatever happens to workers.

One LocalCluster of 2 worker processes on loopback serves the whole module (starting one
costs seconds). The reference is always the single-process path with the whole scene as
one block. Mirrored by tests/testthat/test-distributed.R.

The U-Net predicts one window per call (``batch_size=1``) where bytes are compared: a
convolution's result for a window can depend on the other windows of its call (oneDNN's
kernels on an AVX2 CPU: up to 3.6e-7 apart), and blocks batch windows differently from
one process. That is the model's arithmetic, not the blocks'; with batches the maps agree
to that rounding (the last test here).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import need_module, shared_path
from rsunet import cluster as rcluster, prediction
from rsunet.errors import InputError, WorkerPathError

distributed = need_module("distributed")
need_module("keras")
from test_prediction import (interrupted_run, per_pixel_model, small_unet,  # noqa: E402
                             write_image)

cloudpickle = need_module("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # hooks below run on workers


@pytest.fixture(scope="module")
def client():
    client = rcluster.local_cluster(2, dashboard=False)
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()


@pytest.fixture(autouse=True)
def no_worker_hooks(client):
    yield
    client.run(_set_hook, None)


def _set_hook(hook):
    prediction._after_band = hook


@pytest.fixture(scope="module")
def unet():
    return small_unet()


def _scene(tmp_path):
    rng = np.random.default_rng(21)
    base = rng.integers(1, 256, size=(3, 23, 30)).astype(np.float32)
    data = np.clip(np.kron(base, np.ones((4, 4))) + rng.normal(0, 8, (3, 92, 120)), 0, 255)
    data = data.astype(np.uint8)
    data[:, -7:, -11:] = 0  # a nodata corner
    return write_image(tmp_path / "s.tif", data)


def _blocks(monkeypatch, rows, cols):
    monkeypatch.setattr(prediction, "BLOCK_ROWS", rows)
    monkeypatch.setattr(prediction, "BLOCK_COLUMNS", cols)


def _reference(model, image, out, monkeypatch, **kw):
    _blocks(monkeypatch, None, None)
    try:
        return prediction.predict_raster(model, image, out, **kw)
    finally:
        _blocks(monkeypatch, 30, 35)  # 4 x 4 blocks on the cluster


def _same(a, b):
    for kind in a:
        assert Path(a[kind]).read_bytes() == Path(b[kind]).read_bytes(), kind


KW = dict(window=16, overlap=6, output="both", batch_size=1, progress=False)  # see above


@pytest.mark.parametrize("blend,tta,uncertainty", [("hann", False, None), ("centre", False, "entropy"),
                                                   ("average", False, None), ("hann", True, "tta")])
def test_two_workers_give_the_bytes_of_one_process(tmp_path, monkeypatch, client, unet,
                                                  blend, tta, uncertainty):
    image = _scene(tmp_path)
    kw = dict(KW, blend=blend, tta=tta, prob_dtype="uint8" if tta else "float32",
              uncertainty=uncertainty)
    ref = _reference(unet, image, tmp_path / "ref.tif", monkeypatch, **kw)
    layout = prediction._Layout.of(92, 120, 16, 6, 30, 35)
    assert len(layout.blocks) >= 6
    outs = prediction.predict_raster(unet, image, tmp_path / "out.tif", cluster=client, **kw)
    _same(ref, outs)
    assert not (tmp_path / ".out.tif.rsunet-partial").exists()


def test_batched_windows_agree_to_the_models_rounding(tmp_path, monkeypatch, client, unet):
    import rasterio

    image = _scene(tmp_path)
    kw = dict(KW, batch_size=4)  # blocks end in short calls: other batches than one process
    ref = _reference(unet, image, tmp_path / "ref.tif", monkeypatch, **kw)
    outs = prediction.predict_raster(unet, image, tmp_path / "out.tif", cluster=client, **kw)
    read = {k: [rasterio.open(f[k]).read() for f in (ref, outs)] for k in ref}
    (p, q), (a, b) = read["probabilities"], read["classes"]
    assert np.array_equal(np.isnan(p), np.isnan(q))
    assert np.nanmax(np.abs(p - q)) < 1e-5
    top2 = np.sort(np.nan_to_num(p), axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-5  # pixels whose class no rounding can flip
    assert clear.mean() > 0.9 and np.array_equal(a[0][clear], b[0][clear])


def test_a_model_file_is_loaded_by_the_workers(tmp_path, monkeypatch, client):
    model = per_pixel_model()
    path = tmp_path / "model.keras"
    model.keras_model.save(path)
    image = _scene(tmp_path)
    ref = _reference(str(path), image, tmp_path / "ref.tif", monkeypatch, **KW)
    outs = prediction.predict_raster(str(path), image, tmp_path / "out.tif", cluster=client,
                                     **KW)
    _same(ref, outs)
    keys = client.run(lambda: sorted(rcluster._MODELS))
    assert any(any(k.startswith("file:") for k in v) for v in keys.values())


def test_real_chips_one_task_per_scene(tmp_path, monkeypatch, client, unet):
    images = sorted(shared_path("amazon", "train", "images").glob("*.tiff"))[:3]
    assert len(images) == 3
    kw = dict(KW, window=128, overlap=32, blend="hann")
    ref = _reference(unet, images, tmp_path / "ref", monkeypatch, **kw)
    outs = prediction.predict_raster(unet, images, tmp_path / "out", cluster=client, **kw)
    assert len(outs) == 3
    for a, b in zip(ref, outs):
        _same(a, b)
    # one real chip split into blocks
    one = prediction.predict_raster(unet, images[0], tmp_path / "one.tif", cluster=client, **kw)
    _same(ref[0], one)


def _die_once(marker, j):
    if j >= 2 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker process dies in the middle of its block


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, monkeypatch, client, unet):
    image = _scene(tmp_path)
    kw = dict(KW, blend="hann")
    ref = _reference(unet, image, tmp_path / "ref.tif", monkeypatch, **kw)
    marker = tmp_path / "died"
    client.run(_set_hook, functools.partial(_die_once, str(marker)))
    outs = prediction.predict_raster(unet, image, tmp_path / "out.tif", cluster=client, **kw)
    assert marker.exists()  # a worker did die
    _same(ref, outs)


def _log_band(log, j):
    with open(log, "a") as f:
        f.write(f"{j}\n")


def test_a_restarted_run_computes_only_unfinished_blocks(tmp_path, monkeypatch, client, unet):
    image = _scene(tmp_path)
    kw = dict(KW, blend="centre")
    ref = _reference(unet, image, tmp_path / "ref.tif", monkeypatch, **kw)
    _blocks(monkeypatch, 30, 35)  # the same layout in one process and on the cluster
    out = tmp_path / "out.tif"
    first = interrupted_run(monkeypatch, 25, unet, image, out, **kw)  # the whole run killed
    log = tmp_path / "bands.log"
    client.run(_set_hook, functools.partial(_log_band, str(log)))
    outs = prediction.predict_raster(unet, image, out, cluster=client, **kw)
    total = prediction._Layout.of(92, 120, 16, 6, 30, 35).total_rows()
    again = log.read_text().split()
    assert len(first) + len(again) == total  # no finished band computed twice
    _same(ref, outs)


def test_a_path_workers_cannot_open_is_refused_before_any_work(tmp_path, monkeypatch, client,
                                                               unet):
    _scene(tmp_path)
    monkeypatch.chdir(tmp_path)  # the workers started elsewhere: "s.tif" is not theirs
    with pytest.raises(WorkerPathError, match=r"cannot read s\.tif.*file system every worker"):
        prediction.predict_raster(unet, "s.tif", tmp_path / "out.tif", cluster=client, **KW)
    assert list(tmp_path.iterdir()) == [tmp_path / "s.tif"]


def test_bad_cluster_arguments_are_input_errors(tmp_path, unet):
    image = _scene(tmp_path)
    for bad in ("locale", "local:0", "local:two", 3):
        with pytest.raises(InputError, match="cluster"):
            prediction.predict_raster(unet, image, tmp_path / "o.tif", cluster=bad, **KW)
    assert not (tmp_path / "o.tif").exists()


def test_the_cli_and_the_workflow_take_a_cluster(tmp_path, capsys):
    from rsunet import cli, config, workflow
    from rsunet.errors import ConfigError

    assert "--cluster" in cli.build_parser()._subparsers._group_actions[0].choices[
        "predict"].format_help()
    image = _scene(tmp_path)
    status = cli.main(["predict", str(image), str(image), str(tmp_path / "o.tif"),
                       "--cluster", "local:none"])
    assert status == 2 and "cluster" in capsys.readouterr().err
    cfg = workflow.read_config({"cluster": "local:2", "scenes": {"example": True}})
    assert cfg["cluster"] == "local:2"
    config.check_cluster("tcp://10.0.0.1:8786")
    for bad in ("local:0", 4, "remote"):
        with pytest.raises(ConfigError, match="cluster"):
            config.check_cluster(bad)


def test_assess_map_on_the_cluster_gives_the_local_confusion_matrix(client):
    from conftest import VECTORS, vectors
    from rsunet.assessment import assess_map

    v = vectors("assessment")
    maps = [VECTORS / v[k]["prediction"] for k in ("multi", "worked")]
    refs = [VECTORS / v[k]["reference"] for k in ("multi", "worked")]
    local = assess_map(maps, refs)
    spread = assess_map(maps, refs, cluster=client)
    np.testing.assert_array_equal(spread.matrix, local.matrix)
    pd_testing = need_module("pandas").testing
    pd_testing.assert_frame_equal(spread.confusion, local.confusion)
    pd_testing.assert_frame_equal(spread.per_scene, local.per_scene)
    assert local.matrix.sum() > 0


def test_make_patches_on_the_cluster_writes_the_local_patch_set(tmp_path, client):
    from rsunet.patches import make_patches

    images = sorted(shared_path("amazon", "train", "images").glob("*.tiff"))[:3]
    masks = []
    for image in images:  # the chips' own labels are PNGs: a mask on each image's grid
        import rasterio

        with rasterio.open(image) as src:
            profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
            data = (src.read(1) > 100).astype(np.uint8)
        masks.append(tmp_path / f"{image.stem}_mask.tif")
        with rasterio.open(masks[-1], "w", **profile) as dst:
            dst.write(data, 1)
    kw = dict(size=64, stride=48, progress=False)
    local = make_patches(images, masks, tmp_path / "local", **kw)
    spread = make_patches(images, masks, tmp_path / "spread", cluster=client, **kw)
    need_module("pandas").testing.assert_frame_equal(spread, local)
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*")
                   if p.is_file())
    assert len(files) >= 7
    for name in files:
        assert (tmp_path / "spread" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
