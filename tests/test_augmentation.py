"""Augmentation: image and mask keep the same geometry, fill is never a class, ranges hold.

Mirrored by tests/testthat/test-augmentation.R on the same vectors (augmentation.json).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import need_module, vectors
from rsunet.errors import InputError, OutputExistsError

need_module("tensorflow")
from rsunet.augmentation import augment, preview_augmentation  # noqa: E402

V = vectors("augmentation")
OFF = dict(p_rotation=0, p_hflip=0, p_vflip=0, p_zoom=0, p_brightness=0, p_saturation=0)


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["name"])
def test_flips_and_quarter_turns_match_numpy(case):
    image, mask = np.array(V["image"], np.uint8), np.array(V["mask"], np.uint8)
    out, m = augment(image, mask, seed=3, **case["settings"])
    np.testing.assert_allclose(out, np.array(case["image"]), atol=1e-3)
    np.testing.assert_array_equal(m, np.array(case["mask"]))


def _blobs(seed, size=96, bands=3):
    """A smooth image and the mask of its band-1 threshold (an independent label)."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(size=(bands, size, size)), (0, 6, 6))
    img = (img - img.min()) / (img.max() - img.min()) * 200 + 20
    return img.astype(np.float32), (img[0] > np.median(img[0])).astype(np.uint8), np.median(img[0])


@pytest.mark.parametrize("seed", range(6))
def test_mask_stays_aligned_with_the_image(seed):
    img, mask, t = _blobs(seed)
    out, m = augment(img, mask, seed=seed, p_rotation=1, p_zoom=1, zoom=(0.8, 1.25),
                     p_brightness=0, p_saturation=0)
    again = (out[0] > t).astype(np.uint8)
    # away from interpolation edges: pixels whose 5x5 neighbourhood has one label
    known = m != 255
    inner = ndimage.binary_erosion(known, np.ones((5, 5)))
    flat = ndimage.maximum_filter(again, 5) == ndimage.minimum_filter(again, 5)
    check = inner & flat
    assert check.mean() > 0.25
    np.testing.assert_array_equal(m[check], again[check])
    assert set(np.unique(m)) <= {0, 1, 255}


def test_rotation_fill_is_ignore_never_a_class():
    f = V["fill_45"]
    size = f["size"]
    image = np.full((3, size, size), 50, np.uint8)
    mask = np.ones((size, size), np.uint8)
    out, m = augment(image, mask, seed=0, nodata=0, **f["settings"])
    assert abs((m == 255).mean() - f["fraction"]) < f["tolerance"]
    assert set(np.unique(m)) == {1, 255}
    assert (out[:, m == 255] == 0).all()  # fill pixels are nodata in the image too
    for seed in range(20):  # any angle and zoom: labels are only 1 or unknown
        _, m = augment(image, mask, seed=seed, p_rotation=1, p_zoom=1, zoom=(0.7, 1.3))
        assert set(np.unique(m)) <= {1, 255}
        assert (m == 1).any()


def test_brightness_multiplies_every_band_within_range():
    img, mask, _ = _blobs(1)
    ratios = []
    for seed in range(30):
        out, m = augment(img, mask, seed=seed, **dict(OFF, p_brightness=1))
        r = out / img
        assert np.ptp(r) < 1e-4  # one factor for the patch
        ratios.append(r.mean())
        np.testing.assert_array_equal(m, mask)
    assert 0.9 - 1e-6 <= min(ratios) < 0.95 and 1.05 < max(ratios) <= 1.1 + 1e-6


def test_gain_and_haze_change_each_band_by_its_own_draw():
    img, mask, _ = _blobs(1, bands=3)
    img = img + 10.0  # no zero pixel: ratios are defined
    centre = img.reshape(3, -1).mean(axis=1)
    gains, hazes = [], []
    for seed in range(20):
        g, m = augment(img, mask, seed=seed, **dict(OFF, p_gain=1))
        r = (g / img).reshape(3, -1)
        assert np.ptp(r, axis=1).max() < 1e-4  # one factor per band
        gains.extend(r[:, 0])
        np.testing.assert_array_equal(m, mask)
        h, _ = augment(img, mask, seed=seed, **dict(OFF, p_haze=1))
        d = (h - img).reshape(3, -1)
        assert np.ptp(d, axis=1).max() < 1e-3  # one offset per band
        hazes.extend(d[:, 0] / centre)
    assert 0.8 - 1e-5 <= min(gains) < 0.9 and 1.15 < max(gains) <= 1.25 + 1e-5
    assert -0.1 - 1e-5 <= min(hazes) < -0.05 and 0.05 < max(hazes) <= 0.1 + 1e-5
    assert np.ptp(np.reshape(gains, (20, 3)), axis=1).max() > 0.01  # bands differ


def test_contrast_scales_the_deviation_from_the_patch_band_means():
    img, mask, _ = _blobs(3, bands=2)
    factors = []
    for seed in range(20):
        out, _ = augment(img, mask, seed=seed, **dict(OFF, p_contrast=1))
        mean_in, mean_out = img.mean(axis=(1, 2)), out.mean(axis=(1, 2))
        np.testing.assert_allclose(mean_out, mean_in, rtol=1e-4)
        dev_in, dev_out = img - mean_in[:, None, None], out - mean_out[:, None, None]
        big = np.abs(dev_in) > 5
        f = dev_out[big] / dev_in[big]
        assert np.ptp(f) < 1e-3  # one factor for every band and pixel
        factors.append(f.mean())
    assert 0.7 - 1e-4 <= min(factors) < 0.85 and 1.25 < max(factors) <= 1.4 + 1e-4


def test_stretch_gives_each_patch_the_stack_mean_and_spread_as_a_scene_stretch_would():
    # three patches of one land cover each: dim and flat, mid, bright and contrasty
    base, mask, _ = _blobs(5, size=64, bands=2)
    dev = base - base.mean(axis=(1, 2), keepdims=True)
    stack = np.stack([60 + 0.1 * dev, 120 + 0.5 * dev, 180 + 1.0 * dev]).astype(np.float32)
    masks = np.stack([mask] * 3)
    centre, spread = stack.mean(axis=(0, 2, 3)), stack.std(axis=(0, 2, 3))
    full, _ = augment(stack, masks, seed=1, **dict(OFF, p_stretch=1, stretch=(1, 1)))
    np.testing.assert_allclose(full.mean(axis=(2, 3)), np.tile(centre, (3, 1)), rtol=1e-4)
    np.testing.assert_allclose(full.std(axis=(2, 3)), np.tile(spread, (3, 1)), rtol=1e-3)
    for k in range(3):  # the texture is kept, only its contrast changes
        np.testing.assert_allclose(full[k] - centre[:, None, None], dev * (spread / dev.std(axis=(1, 2)))[:, None, None],
                                   atol=1e-2)
    mixes = []
    for seed in range(12):
        half, _ = augment(stack, masks, seed=seed, **dict(OFF, p_stretch=1))
        t = (half[0] - stack[0]) / (full[0] - stack[0])
        assert np.ptp(t) < 1e-3  # one mix a patch
        mixes.append(float(t.mean()))
    assert 0 <= min(mixes) < 0.3 and 0.7 < max(mixes) <= 1 + 1e-4
    alone, _ = augment(stack[1], mask, seed=1, **dict(OFF, p_stretch=1, stretch=(1, 1)))
    np.testing.assert_allclose(alone, stack[1], atol=1e-3)  # one patch is its own reference
    with pytest.raises(InputError, match="stretch"):
        augment(stack, masks, stretch=(0.5, 2))


def test_radiometric_draws_leave_the_geometry_of_a_seed_unchanged():
    img, mask, _ = _blobs(4)
    _, plain = augment(img, mask, seed=9)
    _, more = augment(img, mask, seed=9, p_gain=1, p_haze=1, p_contrast=1, p_stretch=1)
    np.testing.assert_array_equal(plain, more)


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_saturation_scales_the_deviation_from_the_pixel_mean(bands):
    img, mask, _ = _blobs(2, bands=bands)
    factors = []
    for seed in range(20):
        out, _ = augment(img, mask, seed=seed, **dict(OFF, p_saturation=1))
        np.testing.assert_allclose(out.mean(axis=0), img.mean(axis=0), rtol=1e-5)
        dev_in, dev_out = img - img.mean(axis=0), out - out.mean(axis=0)
        if bands == 1:
            np.testing.assert_allclose(out, img, rtol=1e-6)
            continue
        big = np.abs(dev_in) > 5
        f = dev_out[big] / dev_in[big]
        assert np.ptp(f) < 1e-3
        factors.append(f.mean())
    if bands > 1:
        assert 0.9 - 1e-4 <= min(factors) < 0.96 and 1.04 < max(factors) <= 1.1 + 1e-4


def test_nodata_stays_nodata():
    img, mask, _ = _blobs(3)
    img[:, 10:20, 30:50] = -9999
    img[1, 60, 60] = -9999  # one band missing is a missing pixel
    out, m = augment(img, mask, seed=5, nodata=-9999, **dict(OFF, p_brightness=1, p_saturation=1))
    hole = np.zeros(mask.shape, bool)
    hole[10:20, 30:50] = True
    hole[60, 60] = True
    assert (m[hole] == 255).all() and (m[~hole] != 255).all()
    assert (out[:, hole] == -9999).all() and (out[:, ~hole] != -9999).all()
    for seed in range(10):
        out, m = augment(img, mask, seed=seed, nodata=-9999)
        assert not (out[:, m != 255] == -9999).any()  # a labelled pixel always has data


def test_same_seed_same_result_and_batches():
    img, mask, _ = _blobs(4)
    a = augment(img, mask, seed=11)
    b = augment(img, mask, seed=11)
    c = augment(img, mask, seed=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    stack, masks = augment(np.stack([img, img]), np.stack([mask, mask]), seed=11)
    assert stack.shape == (2,) + img.shape and masks.shape == (2,) + mask.shape


def test_bad_settings_are_input_errors():
    img, mask, _ = _blobs(5)
    with pytest.raises(InputError, match="probability"):
        augment(img, mask, p_rotation=2)
    with pytest.raises(InputError, match="positive"):
        augment(img, mask, zoom=(0, 1))
    with pytest.raises(InputError, match="mask"):
        augment(img, mask[:10])


def test_preview_writes_a_png(tmp_path, amazon_patches):
    from PIL import Image

    out = tmp_path / "aug.png"
    preview_augmentation(amazon_patches, out, n=3, versions=2, seed=1)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 400
    with pytest.raises(OutputExistsError):
        preview_augmentation(amazon_patches, out, n=3)


@pytest.fixture(scope="module")
def amazon_patches(tmp_path_factory):
    from amazon_patches import amazon_patch_set

    return amazon_patch_set(tmp_path_factory.mktemp("amazon"), n_images=1, size=64)
