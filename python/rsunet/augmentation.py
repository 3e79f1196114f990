"""Augmentation of training patches: the same geometry for image and mask, on the fly.

Every random draw is a stateless TensorFlow draw from a seed, so the same seed gives the
same augmented patches, in a ``tf.data`` pipeline (:func:`augment_batch`, used by
:func:`rsunet.train_unet`) as in :func:`augment` (NumPy in, NumPy out, for users and
tests). Validation patches are never augmented.

Geometry (rotation by any angle, zoom in or out, then horizontal and vertical flips) is one
affine transform per patch, applied once with ``ImageProjectiveTransformV3``: bilinear
for the image, nearest for the mask. The part of the output that comes from outside the
patch (the corners a rotation uncovers, the border a zoom-out leaves) is **unknown**:
its mask is the ignore value 255, never a class, so the loss does not learn it; its image
pixels are set to the band centre (0 once normalised), like nodata.

Radiometry, on the raw pixel values:

* brightness: every band of the patch is multiplied by one factor (e.g. 0.9-1.1);
* saturation: each pixel's deviation from its own mean over the bands is multiplied by
  one factor, ``x_b' = m + f * (x_b - m)`` with ``m`` the pixel's band mean. For RGB this
  is the usual saturation change (grey stays grey, colours move away from or towards
  grey); the same rule applies to any band count (a single band is left unchanged);
* gain, haze and contrast (off unless asked for; the example configurations turn them
  on): each band multiplied by its own factor, shifted by its own fraction of the band
  mean, and the patch's contrast around its band means scaled: the differences of
  calibration, haze and stretch between scenes, so that a model learns not to rely on
  them;
* stretch (off unless asked for): each band of the patch moved to the training centre
  and its spread around its own mean scaled to the training spread, as a per-scene
  stretch (``normalize="scene"``) shows a scene that holds only this patch: a scene of a
  single land cover, whose 2-98 % range spans one cover's texture. A model that never
  saw such a stretch reads stretched pasture texture as forest (docs/validation.md,
  chip 970), but training with ``p_stretch=0.5`` did not cure it there (the chip and the
  cross-validation's mean got worse), so it stays off in every configuration;
  ``stretch`` is the range of the mix between the patch as it is (0) and fully
  stretched (1).

Nodata pixels stay nodata: they keep mask 255 and the centre value, whatever the draw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rsunet.errors import InputError
from rsunet.labels import IGNORE

__all__ = ["AugmentParams", "augment", "augment_batch", "preview_augmentation"]



@dataclass(frozen=True)
class AugmentParams:
    """Ranges and probabilities of each augmentation (see :func:`augment`)."""

    rotation: tuple = (0.0, 360.0)
    p_rotation: float = 0.5
    p_hflip: float = 0.5
    p_vflip: float = 0.5
    zoom: tuple = (0.9, 1.1)
    p_zoom: float = 0.5
    brightness: tuple = (0.9, 1.1)
    p_brightness: float = 0.5
    saturation: tuple = (0.9, 1.1)
    p_saturation: float = 0.5
    gain: tuple = (0.8, 1.25)
    p_gain: float = 0.0
    haze: tuple = (-0.1, 0.1)
    p_haze: float = 0.0
    contrast: tuple = (0.7, 1.4)
    p_contrast: float = 0.0
    stretch: tuple = (0.0, 1.0)
    p_stretch: float = 0.0

    @classmethod
    def from_any(cls, value) -> "AugmentParams | None":
        """None/False -> None (no augmentation); True -> defaults; a dict -> those settings."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise InputError(f"unknown augmentation setting(s) {sorted(unknown)}; "
                                 f"expected some of {sorted(cls.__dataclass_fields__)}")
            return cls(**value).checked()
        raise InputError(f"augmentation must be True, False or a dict of settings, got {value!r}")

    def checked(self) -> "AugmentParams":
        for name in ("p_rotation", "p_hflip", "p_vflip", "p_zoom", "p_brightness", "p_saturation",
                     "p_gain", "p_haze", "p_contrast", "p_stretch"):
            p = float(getattr(self, name))
            if not 0 <= p <= 1:
                raise InputError(f"{name} is a probability between 0 and 1, got {p}")
        for name in ("rotation", "zoom", "brightness", "saturation", "gain", "haze", "contrast"):
            lo, hi = _range(getattr(self, name), name)
            if name not in ("rotation", "haze") and lo <= 0:
                raise InputError(f"{name} factors must be positive, got ({lo}, {hi})")
        lo, hi = _range(self.stretch, "stretch")
        if lo < 0 or hi > 1:
            raise InputError(f"stretch is a range of mixes within (0, 1), got ({lo}, {hi})")
        return self

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def radiometric(self) -> bool:
        """Whether any per-band radiometric change (gain, haze, contrast) can be drawn."""
        return max(self.p_gain, self.p_haze, self.p_contrast) > 0


def _range(value, name):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a range (low, high), got {value!r}") from None
    if hi < lo:
        raise InputError(f"{name} range must be (low, high) with low <= high, got ({lo}, {hi})")
    return lo, hi


# ---- TensorFlow core, one batch at a time -------------------------------------------------

def augment_batch(images, labels, valid, seed, params: AugmentParams, centre, spread=None):
    """Augment a batch inside a TensorFlow graph (tf.data map or eager).

    Args:
        images: ``(n, rows, cols, bands)`` float32 raw pixel values.
        labels: ``(n, rows, cols)`` uint8 class ids (255 = ignore).
        valid: ``(n, rows, cols)`` bool, False on nodata pixels.
        seed: shape ``(2,)`` int32/int64 tensor: the stateless random seed of this batch.
        params: the :class:`AugmentParams`.
        centre: ``(bands,)`` float32 per-band value that fill and nodata pixels get
            (the training mean: 0 once normalised).
        spread: ``(bands,)`` float32 per-band spread a stretched patch gets (the
            training standard deviation); needed when ``params.p_stretch > 0``.

    Returns:
        ``(images, labels, valid)`` augmented, same shapes and dtypes; fill pixels have
        label 255, valid False and image value ``centre``.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    n, rows, cols = shape[0], shape[1], shape[2]
    centre = tf.reshape(tf.cast(centre, tf.float32), [1, 1, 1, -1])
    u = tf.random.stateless_uniform([n, 10], seed=tf.cast(seed, tf.int32))

    transforms = _transforms(u, params, rows, cols)
    size = tf.stack([rows, cols])
    # centred, so that the zero fill and bilinear blending at the border mean "the centre"
    x = tf.where(valid[..., None], images - centre, 0.0)
    x = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transforms, output_shape=size,
                                              fill_value=0.0, interpolation="BILINEAR",
                                              fill_mode="CONSTANT")
    # label and validity travel together, by nearest; outside the patch both become 255
    lv = tf.stack([tf.cast(labels, tf.float32), tf.cast(valid, tf.float32)], axis=-1)
    lv = tf.raw_ops.ImageProjectiveTransformV3(images=lv, transforms=transforms, output_shape=size,
                                               fill_value=float(IGNORE), interpolation="NEAREST",
                                               fill_mode="CONSTANT")
    valid_out = tf.equal(lv[..., 1], 1.0)
    labels_out = tf.where(valid_out, tf.cast(lv[..., 0], tf.uint8), tf.constant(IGNORE, tf.uint8))
    x = x + centre
    if params.p_stretch > 0:
        if spread is None:
            raise InputError("augment_batch: p_stretch > 0 needs the training spread (spread=)")
        x = _stretch(x, valid_out, seed, params, centre, tf.reshape(tf.cast(spread, tf.float32), [1, 1, 1, -1]))
    if params.radiometric:
        x = _radiometry(x, valid_out, seed, params, centre)

    brightness = _factor(u[:, 6], u[:, 7], params.p_brightness, params.brightness)
    x = x * tf.reshape(brightness, [-1, 1, 1, 1])
    saturation = tf.reshape(_factor(u[:, 8], u[:, 9], params.p_saturation, params.saturation), [-1, 1, 1, 1])
    grey = tf.reduce_mean(x, axis=-1, keepdims=True)
    x = grey + saturation * (x - grey)
    x = tf.where(valid_out[..., None], x, centre)
    return x, labels_out, valid_out


def _stretch(x, valid, seed, params, centre, spread):
    """Each band of a patch moved to ``centre`` with its spread around its own mean scaled
    to ``spread``, mixed with the patch as it was by a draw in ``params.stretch`` (0: as it
    was, 1: fully stretched). A band without spread keeps its contrast (as
    :func:`rsunet.normalization.scene_scaling` leaves such a band). Its own stream, so the
    other draws of a seed are the same with or without it."""
    import tensorflow as tf

    s = tf.cast(seed, tf.int32) + tf.constant([15485863, 32452843], tf.int32)
    u = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed=s)
    mix = tf.reshape(_factor(u[:, 0], u[:, 1], params.p_stretch, params.stretch, neutral=0.0), [-1, 1, 1, 1])
    w = tf.cast(valid, tf.float32)[..., None]
    count = tf.maximum(tf.reduce_sum(w, axis=[1, 2], keepdims=True), 1.0)
    mean = tf.reduce_sum(x * w, axis=[1, 2], keepdims=True) / count
    sd = tf.sqrt(tf.reduce_sum(tf.square((x - mean) * w), axis=[1, 2], keepdims=True) / count)
    gain = tf.where(sd > 0, spread / tf.maximum(sd, 1e-12), 1.0)
    stretched = centre + (x - mean) * gain
    return x + mix * (stretched - x)


def _radiometry(x, valid, seed, params, centre):
    """Per-band gain, haze and contrast: scenes differ in calibration, haze and stretch,
    and a model that sees such changes in training learns not to rely on them.

    Gain multiplies each band by its own factor; haze adds to each band its own fraction
    of the band centre (the training mean); contrast scales each pixel's deviation from the
    patch's band means by one factor. Drawn from their own stream (seed + constants), so
    the geometric draws of a seed are the same with or without them.
    """
    import tensorflow as tf

    bands = tf.shape(x)[-1]
    n = tf.shape(x)[0]
    s = tf.cast(seed, tf.int32) + tf.constant([7919, 104729], tf.int32)
    u = tf.random.stateless_uniform([n, 3, 2, bands], seed=s)
    gain = _factor(u[:, 0, 0], u[:, 0, 1], params.p_gain, params.gain)
    haze = _factor(u[:, 1, 0], u[:, 1, 1], params.p_haze, params.haze, neutral=0.0)
    contrast = _factor(u[:, 2, 0, :1], u[:, 2, 1, :1], params.p_contrast, params.contrast)
    x = x * gain[:, None, None, :] + haze[:, None, None, :] * centre
    w = tf.cast(valid, tf.float32)[..., None]
    mean = tf.reduce_sum(x * w, axis=[1, 2], keepdims=True) / tf.maximum(
        tf.reduce_sum(w, axis=[1, 2], keepdims=True), 1.0)
    return mean + contrast[:, None, None, :] * (x - mean)


def _factor(u_apply, u_value, p, value_range, neutral=1.0):
    """Per-sample factor: drawn in the range with probability p, else 1."""
    import tensorflow as tf

    lo, hi = (float(v) for v in value_range)
    return tf.where(u_apply < p, lo + u_value * (hi - lo), neutral)


def _transforms(u, params, rows, cols):
    """One ``(8,)`` projective transform per sample: output pixel -> input point.

    The input point is ``c + A (out - c)``, with ``c`` the patch centre and
    ``A = rotation(theta) @ flips / zoom``: a zoom above 1 magnifies (zooms in).
    """
    import tensorflow as tf

    lo, hi = (float(v) for v in params.rotation)
    theta = tf.where(u[:, 0] < params.p_rotation, (lo + u[:, 1] * (hi - lo)) * (math.pi / 180.0), 0.0)
    sx = tf.where(u[:, 2] < params.p_hflip, -1.0, 1.0)
    sy = tf.where(u[:, 3] < params.p_vflip, -1.0, 1.0)
    zoom = _factor(u[:, 4], u[:, 5], params.p_zoom, params.zoom)
    cos, sin = tf.cos(theta) / zoom, tf.sin(theta) / zoom
    a0, a1 = cos * sx, -sin * sy
    b0, b1 = sin * sx, cos * sy
    cx = (tf.cast(cols, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(rows, tf.float32) - 1.0) / 2.0
    a2 = cx - a0 * cx - a1 * cy
    b2 = cy - b0 * cx - b1 * cy
    zero = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


# ---- NumPy-facing ----------------------------------------------------------------------------

def augment(image, mask, seed=0, rotation=(0.0, 360.0), p_rotation=0.5, p_hflip=0.5, p_vflip=0.5,
            zoom=(0.9, 1.1), p_zoom=0.5, brightness=(0.9, 1.1), p_brightness=0.5,
            saturation=(0.9, 1.1), p_saturation=0.5, gain=(0.8, 1.25), p_gain=0.0,
            haze=(-0.1, 0.1), p_haze=0.0, contrast=(0.7, 1.4), p_contrast=0.0, stretch=(0.0, 1.0),
            p_stretch=0.0, nodata=None):
    """Augment one patch (or a stack of patches) and its mask with the same geometry.

    Each augmentation is applied with its own probability, its amount drawn uniformly
    in its range; the same ``seed`` gives the same result. This is what
    :func:`rsunet.train_unet` does to every training batch.

    Args:
        image: ``(bands, rows, cols)`` or a stack ``(n, bands, rows, cols)``, any numeric dtype.
        mask: ``(rows, cols)`` or ``(n, rows, cols)`` class ids (255 = unknown).
        seed: integer random seed.
        rotation: range of rotation angles in degrees, e.g. ``(0, 360)``.
        p_rotation: probability of a rotation.
        p_hflip: probability of a left-right flip.
        p_vflip: probability of an up-down flip.
        zoom: range of zoom factors (above 1 zooms in, below 1 zooms out).
        p_zoom: probability of a zoom.
        brightness: range of brightness factors (every band multiplied).
        p_brightness: probability of a brightness change.
        saturation: range of saturation factors (each pixel's deviation from its mean
            over the bands multiplied; a single band is unchanged).
        p_saturation: probability of a saturation change.
        gain: range of per-band gain factors (each band multiplied by its own draw: a
            change of calibration or colour balance).
        p_gain: probability of a gain change.
        haze: range of per-band offsets, as fractions of the band's mean (each band
            shifted by its own draw: haze brightens, a dark-object correction darkens).
        p_haze: probability of a haze change.
        contrast: range of contrast factors (each pixel's deviation from the patch's
            band means multiplied by one draw: a scene stretched more or less).
        p_contrast: probability of a contrast change.
        stretch: range of stretch mixes, 0 (the patch as it is) to 1 (each band moved to
            the mean of all the patches given and its spread around the patch's own mean
            scaled to their standard deviation: how a per-scene stretch shows a scene that
            holds only this patch). One patch alone is its own reference: stretch a stack.
        p_stretch: probability of a stretch.
        nodata: the image's nodata value: such pixels (in any band) stay nodata.

    Returns:
        ``(image, mask)``: float32 image in the input's layout and uint8 mask. Pixels that
        come from outside the patch (rotation corners, zoom-out border) and nodata
        pixels have mask 255 and image value ``nodata`` (0 if None).

    Raises:
        InputError: shapes of image and mask do not match, or a setting is out of range.
    """
    import tensorflow as tf

    params = AugmentParams(tuple(rotation), p_rotation, p_hflip, p_vflip, tuple(zoom), p_zoom,
                           tuple(brightness), p_brightness, tuple(saturation), p_saturation,
                           tuple(gain), p_gain, tuple(haze), p_haze, tuple(contrast),
                           p_contrast, tuple(stretch), p_stretch).checked()
    image, mask = np.asarray(image), np.asarray(mask)
    single = image.ndim == 3
    if single:
        image, mask = image[np.newaxis], mask[np.newaxis]
    if image.ndim != 4 or mask.shape != (image.shape[0],) + image.shape[2:]:
        raise InputError(f"image must be (bands, rows, cols) with mask (rows, cols) (or stacks of "
                         f"them); got image {image.shape} and mask {mask.shape}")
    x = np.moveaxis(image, 1, -1).astype(np.float32)
    valid = np.ones(x.shape[:3], bool) if nodata is None else ~np.any(_is_value(x, nodata), axis=-1)
    labels = np.where(valid, mask, IGNORE).astype(np.uint8)
    centre, spread = (np.array([f(x[..., b][valid]) if valid.any() else 0.0 for b in range(x.shape[-1])],
                               np.float32) for f in (np.mean, np.std))
    out, lab, ok = augment_batch(x, labels, valid, tf.constant([int(seed), 0], tf.int64), params, centre,
                                 spread)
    out, lab, ok = out.numpy(), lab.numpy(), ok.numpy()
    out[~ok] = 0.0 if nodata is None else nodata
    out = np.moveaxis(out, -1, 1)
    return (out[0], lab[0]) if single else (out, lab)


def _is_value(a, value):
    return np.isnan(a) if isinstance(value, float) and math.isnan(value) else a == value


def preview_augmentation(patches, out=None, n=4, versions=3, patch_ids=None, split="train", seed=0,
                         bands=None, alpha=0.4, augmentation=True, overwrite=False):
    """A figure of a few patches and augmented versions of them, masks overlaid (a PNG when ``out`` is given).

    Row 1 shows the patches; each further row one augmented version (same seed, same
    result). Unknown pixels (mask 255, including the rotation fill) are not coloured.

    Args:
        patches: a patch folder or :class:`rsunet.patches.PatchSet`.
        out: the PNG to write (None: write nothing).
        n: how many patches (chosen at random with ``seed``) when ``patch_ids`` is None.
        versions: augmented versions per patch.
        patch_ids: the patches to show.
        split: choose among this split's patches (None: any patch; the split column is
            then not needed).
        seed: random seed of the choice and of the augmentation.
        bands: 1-based bands to show as RGB (the first three by default).
        alpha: mask opacity.
        augmentation: ``True`` (the defaults of :func:`augment`) or a dict of its
            settings (e.g. ``{"p_rotation": 1}``).
        overwrite: replace an existing ``out``.

    Returns:
        The :class:`matplotlib.figure.Figure` (the global matplotlib backend is untouched).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        InputError: no such patches or split.
    """
    from rsunet.io import check_not_input
    from rsunet.patches import as_patchset
    from rsunet.plotting import class_colormap, new_figure, save_figure, stretch

    check_not_input(out, patches)
    ps = as_patchset(patches)
    if split is not None and "split" not in ps.index.columns:
        split = None  # before split_patches every patch is a candidate
    ids = ps.chosen(n, patch_ids, split, seed)
    images, masks = ps.read(ids)
    settings = AugmentParams.from_any(augmentation) or AugmentParams()
    bands = [b - 1 for b in (bands or range(1, min(ps.bands, 3) + 1))]
    k = max(ps.classes) + 1 if ps.classes else 2
    cmap = class_colormap(k)
    fig = new_figure(figsize=(2.2 * len(ids), 2.2 * (1 + versions)))
    axes = fig.subplots(1 + versions, len(ids), squeeze=False)
    for j, pid in enumerate(ids):
        nodata = ps.scenes[ps.row(pid)["scene"]]["nodata"]
        shown = [(images[j].astype(np.float32), masks[j])]
        for v in range(versions):
            shown.append(augment(images[j], masks[j], seed=int(seed) * 1000 + j * 10 + v + 1,
                                 nodata=nodata, **settings.as_dict()))
        for i, (img, msk) in enumerate(shown):
            ax = axes[i, j]
            rgb = stretch(img[bands], nodata)
            ax.imshow(rgb if rgb.shape[-1] == 3 else rgb[..., 0], cmap=None if rgb.shape[-1] == 3 else "gray")
            ax.imshow(np.ma.masked_equal(msk, IGNORE), cmap=cmap, vmin=-0.5, vmax=k - 0.5,
                      alpha=alpha, interpolation="nearest")
            ax.set_axis_off()
        axes[0, j].set_title(pid, fontsize=6)
    axes[0, 0].text(-0.05, 0.5, "original", transform=axes[0, 0].transAxes, rotation=90,
                    va="center", ha="right", fontsize=7)
    return save_figure(fig, out, overwrite)
