"""rsunet: U-Net semantic segmentation of remote-sensing images.

One module per stage of the workflow::

    io           read windows of GeoTIFFs, write GeoTIFFs atomically; windows, nodata
    labels       labels on a grid: the ignore value, class tags, raw values -> class ids
    normalization band percentiles, scene scaling, band statistics
    samples      make_mask: reference polygons or label rasters -> mask on the image grid
    patches      make_patches, PatchSet: georeferenced patch sets (splits: split_patches)
    augmentation augment, preview_augmentation: geometry and radiometry, image and mask alike
    model        unet and the losses
    training     train_unet: the training loop, checkpoints, history
    artefact     load_model, RsunetModel: the self-describing, reloadable model
    prediction   predict_raster: sliding windows, blending, streaming mosaic
    assessment   assess_map, count_objects, polygonize
    estimation   sample_points, compare_maps: stratified samples, area estimates, map comparison
    labelling    suggest_labels: where to label next
    baseline     train_baseline: the course's pixel-based Random Forest, for comparison
    validation   cross_validate: both models on scene-wise (or block-wise) folds
    example      example_data: the bundled Amazon scenes
    workflow     run_workflow: the whole workflow from one configuration file
    r            the rpy2 bridge (optional: ``pip install rsunet[r]``)

Heavy dependencies (TensorFlow, rpy2) load only when the function that needs them runs,
so ``import rsunet`` is quick; the public functions are reachable from the top level.
TensorFlow's start-up lines are hidden unless ``TF_CPP_MIN_LOG_LEVEL`` asks for them
(:mod:`rsunet.quiet`).
"""

from importlib import import_module

from rsunet import quiet as _quiet

_quiet.install_hook()

__version__ = "0.1.0"

_PUBLIC = {
    "read_raster": "io",
    "write_raster": "io",
    "raster_info": "io",
    "make_mask": "samples",
    "make_patches": "patches",
    "read_patch": "patches",
    "split_patches": "patches",
    "patch_grid": "patches",
    "class_balance": "patches",
    "plot_patches": "patches",
    "augment": "augmentation",
    "preview_augmentation": "augmentation",
    "unet": "model",
    "train_unet": "training",
    "load_model": "artefact",
    "predict_raster": "prediction",
    "assess_map": "assessment",
    "count_objects": "assessment",
    "polygonize": "assessment",
    "sample_points": "estimation",
    "compare_maps": "estimation",
    "suggest_labels": "labelling",
    "train_baseline": "baseline",
    "load_baseline": "baseline",
    "example_data": "example",
    "cross_validate": "validation",
    "plot_cross_validation": "validation",
    "run_workflow": "workflow",
    "example_config": "workflow",
    "versions": "check",
    "check": "check",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'rsunet' has no attribute {name!r}")
    value = getattr(import_module(f"rsunet.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
