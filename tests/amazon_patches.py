"""A small real patch set from the Amazon training chips, for the augmentation and
training tests (masks: 1 = forest, 2 = non-forest -> 0 background)."""

from __future__ import annotations

from conftest import shared_path


def amazon_patch_set(folder, n_images=3, size=64, stride=64, seed=0):
    """Masks and a split patch folder under ``folder``; returns the patch folder."""
    from rsunet.patches import make_patches, split_patches
    from rsunet.samples import make_mask

    root = shared_path("amazon", "train")
    images = sorted((root / "images").glob("*.tiff"))[:n_images]
    masks = []
    for image in images:
        png = root / "masks" / f"{image.stem}.png"
        made = make_mask(image, png, folder / f"{image.stem}_mask.tif",
                         classes={1: "forest", 2: "background"})
        masks.append(made["path"])
    patches = folder / "patches"
    make_patches(images, masks, patches, size=size, stride=stride, progress=False)
    split_patches(patches, fractions=(0.75, 0.25), method="random", seed=seed)
    return patches
