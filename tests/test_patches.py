"""make_patches / PatchSet / read_patch / split_patches and the quick looks.

Expected windows and class counts come from plain numpy slicing in
tools/make_test_vectors.py (patches.json); round trips compare with rasterio's own
windowed reads. Mirrored by tests/testthat/test-patches.R.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.windows import Window

from conftest import VECTORS, shared_path, vectors
from rsunet.errors import GridMismatchError, InputError, OutputExistsError, PatchSizeError
from rsunet.normalization import band_percentiles
from rsunet.patches import (PatchSet, class_balance, make_patches, patch_grid, plot_patches,
                            read_patch, split_patches, window_offsets)
from rsunet.samples import make_mask

V = vectors("patches")
IMAGE, MASK = VECTORS / V["image"], VECTORS / V["mask"]


def _make(case, out):
    return make_patches(IMAGE, MASK, out, size=case["size"], stride=case["stride"],
                        edge=case["edge"], keep=case["keep"], min_valid=case["min_valid"],
                        min_labelled=case["min_labelled"], progress=False)


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: f"{c['size']}-{c['stride']}-{c['edge']}-{c['keep']}")
def test_windows_and_class_counts_match_the_vectors(case, tmp_path):
    index = _make(case, tmp_path / "p")
    assert len(index) == case["n_patches"]
    assert index[["col_off", "row_off"]].values.tolist() == case["offsets"]
    assert {k: int(index[f"n_{k}"].sum()) for k in ("0", "1", "2")} == case["class_totals"]
    assert index["patch_id"].is_unique
    on_disk = pd.read_csv(tmp_path / "p" / "index.csv")
    assert on_disk["patch_id"].tolist() == index["patch_id"].tolist()
    meta = json.loads((tmp_path / "p" / "patches.json").read_text())
    assert meta["format"] == "rsunet-patches/1" and meta["size"] == case["size"]
    assert meta["classes"] == {"0": "background", "1": "forest", "2": "water"}


def test_patches_round_trip_exactly_with_transform_padding_and_nodata(tmp_path):
    case = next(c for c in V["cases"] if c["edge"] == "pad")
    _make(case, tmp_path / "p")
    ps = PatchSet(tmp_path / "p")
    assert ps.bands == 4 and ps.size == 32 and ps.ignore_value == 255
    with rasterio.open(IMAGE) as src, rasterio.open(MASK) as msrc:
        for pid in ps.index["patch_id"]:
            w = ps.window(pid)
            image, mask = read_patch(ps, pid)
            expected = src.read(window=w, boundless=True, fill_value=src.nodata)
            labels = msrc.read(1, window=w, boundless=True, fill_value=255)
            labels[(expected == src.nodata).any(axis=0)] = 255  # image nodata -> ignore
            np.testing.assert_array_equal(image.data, expected)
            np.testing.assert_array_equal(mask.data[0], labels)
            assert image.data.dtype == np.int16
            assert image.transform == src.window_transform(w) == ps.transform(pid)
            assert image.crs == src.crs == ps.crs(pid)
            np.testing.assert_array_equal(image.valid, (expected != src.nodata).all(axis=0))
    # batch reads come back in the order asked, across the stacks
    ids = ps.index["patch_id"].tolist()[::-3]
    imgs, msks = ps.read(ids)
    for k, pid in enumerate(ids):
        np.testing.assert_array_equal(imgs[k], read_patch(ps, pid)[0].data)


@pytest.mark.parametrize("rel,dtype", [(("nrcan", "sn7_planet_rgba_int16.tif"), "int16"),
                                       (("rstoolbox", "lsat.tif"), "float32"),
                                       (("nrcan", "nb_23322E759967N_1of2_rgb.tif"), "uint8")])
def test_real_scenes_round_trip_every_band_and_dtype(rel, dtype, tmp_path):
    image = shared_path(*rel)
    with rasterio.open(image) as src:
        t, crs, shape = src.transform, src.crs, (src.height, src.width)
    mask = tmp_path / "mask.tif"
    rasterio.open(mask, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8",
                  transform=t, crs=crs).close()  # an all-background mask on the grid
    index = make_patches(image, mask, tmp_path / "p", size=64, stride=48, min_valid=0, progress=False)
    ps = PatchSet(tmp_path / "p")
    with rasterio.open(image) as src:
        for pid in index["patch_id"].iloc[:: max(1, len(index) // 12)]:
            img, _ = read_patch(ps, pid)
            w = ps.window(pid)
            assert img.data.dtype.name == dtype and img.data.shape == (src.count, 64, 64)
            np.testing.assert_array_equal(img.data, src.read(window=w))
            assert img.transform == src.window_transform(w)
    # the last window was shifted back inside the scene on both axes
    assert index["col_off"].max() == shape[1] - 64 and index["row_off"].max() == shape[0] - 64


def test_amazon_scenes_from_png_masks_keep_positive_patches(tmp_path):
    stems = ["Amazon_122.tiff_33", "Amazon_954.tiff_36"]
    images = [shared_path("amazon", "train", "images", f"{s}.tiff") for s in stems]
    masks = [make_mask(i, shared_path("amazon", "train", "masks", f"{s}.png"), tmp_path / f"{s}.tif",
                       classes={1: "forest", 2: "background"})["path"] for i, s in zip(images, stems)]
    index = make_patches(images, masks, tmp_path / "p", size=128, keep="positive", progress=False)
    assert (index["n_1"] > 0).all() and set(index["scene"]) <= set(stems)
    every = make_patches(images, masks, tmp_path / "all", size=128, progress=False)
    assert len(every) == 2 * 16 and len(index) == int((every["n_1"] > 0).sum())


def test_window_offsets_cover_every_pixel():
    assert window_offsets(150, 64, 64, "shift") == [0, 64, 86]
    assert window_offsets(150, 64, 64, "pad") == [0, 64, 128]
    assert window_offsets(150, 64, 64, "drop") == [0, 64]
    assert window_offsets(40, 64, 64, "shift") == [0]  # smaller than a window: padded


def test_bad_sizes_grids_and_existing_output(tmp_path):
    for size in (100, 0, -32):
        with pytest.raises(PatchSizeError, match="multiple of 32"):
            make_patches(IMAGE, MASK, tmp_path / "p", size=size)
    with pytest.raises(PatchSizeError, match="stride"):
        make_patches(IMAGE, MASK, tmp_path / "p", size=32, stride=40)
    other = tmp_path / "other.tif"
    with rasterio.open(MASK) as src:
        profile = dict(src.profile, transform=src.transform * rasterio.Affine.translation(1, 0))
        with rasterio.open(other, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(GridMismatchError, match="make_mask"):
        make_patches(IMAGE, other, tmp_path / "p", size=32, progress=False)
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.partial*"))
    make_patches(IMAGE, MASK, tmp_path / "p", size=32, progress=False)
    with pytest.raises(OutputExistsError):
        make_patches(IMAGE, MASK, tmp_path / "p", size=64, progress=False)
    assert PatchSet(tmp_path / "p").size == 32
    make_patches(IMAGE, MASK, tmp_path / "p", size=64, overwrite=True, progress=False)
    assert PatchSet(tmp_path / "p").size == 64
    with pytest.raises(InputError, match="keep"):
        make_patches(IMAGE, MASK, tmp_path / "q", size=32, keep="grass", progress=False)


def test_block_split_keeps_blocks_whole_is_reproducible_and_updates_the_folder(tmp_path):
    index = make_patches(IMAGE, MASK, tmp_path / "p", size=32, stride=16, min_valid=0, progress=False)
    a = split_patches(tmp_path / "p", fractions=(0.6, 0.2, 0.2), block=2, seed=7, purge=False)
    b = split_patches(index, fractions=(0.6, 0.2, 0.2), block=2, seed=7, purge=False)
    assert a["split"].tolist() == b["split"].tolist()
    assert a.groupby("block")["split"].nunique().max() == 1  # a block is never cut
    # blocks are 2x2 cells of 32 px, by patch centre (independent recomputation)
    centre_r = (index["row_off"] + 16) // 64
    centre_c = (index["col_off"] + 16) // 64
    assert (a["block"] == index["scene"] + ":" + centre_r.astype(str) + ":" + centre_c.astype(str)).all()
    assert set(a["split"]) == {"train", "validation", "test"}
    assert abs((a["split"] == "train").mean() - 0.6) < 0.2
    assert pd.read_csv(tmp_path / "p" / "index.csv")["split"].tolist() == a["split"].tolist()
    r = split_patches(index, fractions={"train": 0.75, "validation": 0.25}, method="random", seed=1)
    assert (r["split"] == "train").sum() == pytest.approx(0.75 * len(index), abs=1)
    assert not r["split"].equals(split_patches(index, method="random", seed=2)["split"])


def _shares_pixels(a, b):
    """Brute force: do windows a and b (rows with col_off, row_off, width, height) intersect?"""
    return (a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width and
            a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height)


def test_purged_block_split_leaves_no_pixel_shared_between_splits(tmp_path):
    # overlapping patches (stride 16 < size 32) across 2x2-cell block borders
    index = make_patches(IMAGE, MASK, tmp_path / "p", size=32, stride=16, min_valid=0, progress=False)
    plain = split_patches(index, fractions=(0.6, 0.2, 0.2), block=2, seed=7, purge=False)
    purged = split_patches(tmp_path / "p", fractions=(0.6, 0.2, 0.2), block=2, seed=7)  # purge by default
    rows = list(purged.itertuples())
    order = {"train": 0, "validation": 1, "test": 2}
    for a in rows:
        for b in rows:
            if a.split in order and b.split in order and a.split != b.split and a.scene == b.scene:
                assert not _shares_pixels(a, b), (a.patch_id, a.split, b.patch_id, b.split)
    excluded = purged["split"] == "excluded"
    assert excluded.sum() > 0  # the unpurged split did leak
    assert any(_shares_pixels(a, b) for a in plain.itertuples() for b in plain.itertuples()
               if a.split == "train" and b.split == "validation")
    # only patches are excluded, the others keep their split; and none needlessly: each
    # excluded one shares pixels with a kept patch of a later split
    assert (purged.loc[~excluded, "split"] == plain.loc[~excluded, "split"]).all()
    for a in purged[excluded].itertuples():
        was = plain.loc[a.Index, "split"]
        assert was != "test" and any(_shares_pixels(a, b) for b in rows
                                     if b.split in order and order[b.split] > order[was])
    assert pd.read_csv(tmp_path / "p" / "index.csv")["split"].tolist() == purged["split"].tolist()
    assert split_patches(index, method="random", seed=1)["split"].isin(["train", "validation"]).all()


def test_purge_drops_nothing_without_overlap(tmp_path):
    # stride == size and edge "pad": no two windows overlap ("shift" moves the last ones back
    # onto their neighbours, and purging rightly catches those)
    index = make_patches(IMAGE, MASK, tmp_path / "p", size=32, stride=32, edge="pad", min_valid=0,
                         progress=False)
    plain = split_patches(index, fractions=(0.6, 0.2, 0.2), block=1, seed=3, purge=False)
    purged = split_patches(index, fractions=(0.6, 0.2, 0.2), block=1, seed=3, purge=True)
    assert purged["split"].tolist() == plain["split"].tolist()
    assert "excluded" not in set(purged["split"]) and len(set(purged["split"])) == 3


def test_grid_balance_and_plot(tmp_path):
    index = make_patches(IMAGE, MASK, tmp_path / "p", size=32, progress=False)
    split = split_patches(tmp_path / "p", block=1, seed=3)
    grid = patch_grid(tmp_path / "p", out=tmp_path / "grid.gpkg")
    import geopandas as gpd

    back = gpd.read_file(tmp_path / "grid.gpkg")
    assert len(back) == len(index) and back.crs.to_epsg() == 3857
    np.testing.assert_allclose(back.total_bounds, [index["left"].min(), index["bottom"].min(),
                                                   index["right"].max(), index["top"].max()])
    assert back["split"].tolist() == split["split"].tolist()
    assert grid.geometry.area.round(6).nunique() == 1
    table = class_balance(tmp_path / "p")
    for (group, cid), row in table.set_index(["group", "class_id"]).iterrows():
        rows = split[split["split"] == group]
        assert row["pixels"] == rows[f"n_{cid}"].sum() and row["n_patches"] == len(rows)
    assert table.groupby("group")["fraction"].sum().round(12).eq(1).all()
    plot_patches(tmp_path / "p", tmp_path / "look.png", n=4, split="train")
    with open(tmp_path / "look.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        plot_patches(tmp_path / "p", tmp_path / "look.png")


def test_patch_functions_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, rsunet.patches, rsunet.samples; "
            "sys.exit(int(any(m.startswith(('tensorflow', 'keras')) for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("case", V["cases"] + [dict(V["cases"][0], stride=V["cases"][0]["size"] // 2 + 8)],
                         ids=lambda c: f"{c['size']}-{c['stride']}-{c['edge']}-{c['keep']}")
def test_recorded_percentiles_are_band_percentiles_bit_for_bit(case, tmp_path):
    # make_patches counts the pixels of the strips it cuts (each scene row once, rows that
    # edge="drop" leaves uncut read at the end) instead of reading the scene again; the
    # figures must be exactly those of a separate read, nodata corner excluded
    _make(case, tmp_path / "p")
    scene = next(iter(PatchSet(tmp_path / "p").scenes.values()))
    np.testing.assert_array_equal(scene["percentiles"]["values"], band_percentiles(IMAGE))


def test_each_scene_records_its_band_percentiles_and_scene_scaling_uses_them(tmp_path):
    _make(V["cases"][0], tmp_path / "p")
    ps = PatchSet(tmp_path / "p")
    scene = next(iter(ps.scenes.values()))
    assert scene["percentiles"]["q"] == [2.0, 98.0]
    # numpy's percentiles over the valid pixels only: the nodata corner does not count
    np.testing.assert_allclose(scene["percentiles"]["values"], V["percentiles"], rtol=1e-12)
    ids = ps.index["patch_id"].tolist()[:3]
    scale, offset = ps.scaling(ids, "scene")
    for got, want in zip(ps.scaling(ids, "both"), (scale, offset)):  # "both"'s scene-scaled channels
        np.testing.assert_array_equal(got, want)
    low, high = np.array(V["percentiles"]).T
    np.testing.assert_allclose(low * scale + offset, 0, atol=1e-6)
    np.testing.assert_allclose(high * scale + offset, 1, atol=1e-6)
    same, zero = ps.scaling(ids, "dataset")
    assert (same == 1).all() and (zero == 0).all() and same.shape == (3, 4)
    with pytest.raises(InputError, match="normalize must be one of"):
        ps.scaling(ids, "per-patch")
    meta = json.loads((tmp_path / "p" / "patches.json").read_text())
    for s in meta["scenes"].values():
        del s["percentiles"]  # a patch set from before scene percentiles were recorded
    (tmp_path / "p" / "patches.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="run make_patches"):
        PatchSet(tmp_path / "p").scaling(ids, "scene")
    with pytest.raises(InputError, match="run make_patches"):  # its scene-scaled channels need them
        PatchSet(tmp_path / "p").scaling(ids, "both")
