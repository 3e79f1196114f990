#' Train a U-Net on a patch set
#'
#' Training patches (`split == "train"`, from [split_patches()]) are augmented on the
#' fly (see [augment()]); validation patches never are; test patches are not used.
#' Inputs are normalised per channel with the mean and standard deviation of the training
#' patches' valid pixels (after the scene scaling of `normalize = "scene"`; `"both"` has
#' two channels per band); pixels whose
#' mask is unknown (255: unlabelled, nodata, rotation fill) count in no loss and no
#' metric. After every epoch the model is
#' checkpointed and `<name>_history.csv` rewritten: an interrupted run continues at the
#' next epoch when called again with the same arguments. Training stops early when
#' `monitor` has not improved for `patience` epochs; `out` receives the best epoch's
#' model, with what prediction needs (bands, normalisation, classes, depth) inside the
#' same file, and `<name>_history.png` the curves.
#'
#' @param patches a patch folder from [make_patches()], split with [split_patches()], or
#'   several (a character vector): they train one model, and must agree in bands, dtype,
#'   patch size and classes (otherwise an error of class `rsunet_patch_set_mismatch_error`
#'   says which differs).
#' @param out the model file to write (`.keras`).
#' @param depth U-Net depth (number of poolings); prediction windows must be multiples of `2^depth`.
#' @param filters filters of the first level.
#' @param batch_norm batch normalisation.
#' @param dropout dropout rate in each block.
#' @param loss `"bce_dice"` (cross-entropy + Dice, the course's), `"dice"`,
#'   `"weighted_ce"` or `"focal"`.
#' @param class_weights for `"weighted_ce"` and `"focal"`: one weight per class id, or
#'   `"auto"` (also `"balanced"`: the inverse of each class's pixel frequency in the
#'   training patches).
#' @param epochs the last epoch to train.
#' @param batch_size patches per step.
#' @param learning_rate Adam's learning rate (its starting value with a schedule).
#' @param schedule `"constant"` or `"cosine"` (the learning rate decays along a half
#'   cosine to 1 % of `learning_rate` at the last step of epoch `epochs`).
#' @param patience epochs without improvement before stopping.
#' @param monitor `"val_loss"`, `"val_f1"`, `"val_iou"` or `"val_accuracy"`: chooses the
#'   best epoch and drives early stopping.
#' @param augmentation `TRUE`, `FALSE`, or a named list of [augment()]'s settings, e.g.
#'   `list(p_rotation = 0.8, zoom = c(0.8, 1.2))`.
#' @param normalize `"dataset"`: raw values standardised with the training pixels' band
#'   means and deviations, the same for every scene (right for calibrated data such as
#'   surface reflectance). `"scene"`: each scene's 2 and 98 % band percentiles are first
#'   mapped to 0 and 1, so haze, illumination and contrast that differ between scenes do
#'   not move the input; [predict_raster()] scales each scene by its own percentiles.
#'   Right for uncalibrated imagery (8-bit composites, drone mosaics), wrong where a
#'   scene holds a single land cover. `"scene_joint"`: as `"scene"` with one stretch for all
#'   bands (the lowest band's 2 % to 0, the highest band's 98 % to 1), so a scene keeps its
#'   colour. `"both"`: the network gets 2 x bands input channels,
#'   the bands standardised as with `"dataset"` (absolute brightness) followed by the bands
#'   scene-scaled as with `"scene"` and then standardised (relative contrast), so it can
#'   learn when a scene's stretch is meaningful; augmentation changes the raw pixels before
#'   both are made. The model's `bands` stays the image's band count; [predict_raster()]
#'   scales each scene by its own percentiles, as for `"scene"`. All but `"dataset"` need
#'   the scene percentiles that [make_patches()] records.
#' @param seed random seed (weights, batch order, augmentation).
#' @param mixed_precision `"auto"` (float16 compute on a GPU), `TRUE` or `FALSE`; the
#'   output stays float32, the loss is scaled, and the model records it.
#' @param sampling `"uniform"` (every training patch once per epoch) or `"balanced"` (for
#'   rare targets: each draw picks one of the classes present with equal chance, then a
#'   patch holding it, from the index's `n_<class>` pixel counts; the loss then weighs the
#'   rare classes' patches more, the validation loss is unchanged).
#' @param strategy `"auto"` (TensorFlow's `MirroredStrategy` when more than one GPU is
#'   visible, else one device), `"mirrored"` or `"default"`. `batch_size` is the global
#'   batch.
#' @param stream `TRUE`: read each batch from the patch set's files as training goes
#'   (memory does not grow with the number of patches); `FALSE`: hold the patches in
#'   memory; `"auto"`: streamed, except on a GPU machine for sets of up to 256 MiB of
#'   patches. The results are the same.
#' @param resume continue an interrupted run of the same call; `FALSE` starts afresh.
#' @param overwrite replace an existing `out` (otherwise error class `rsunet_output_exists_error`).
#' @param progress show a progress bar over epochs.
#' @param callbacks extra Python Keras callbacks (a list), for advanced use.
#' @return An object of class `rsunet_model`: a list with `path`, `history` (a
#'   data.frame, one row per epoch: `epoch`, `loss`, `accuracy`, `f1`, `iou`, the same
#'   with `val_`, `seconds`), `classes`, `bands`, `depth`, `multiple`, `patch_size`,
#'   `normalization` (`normalize`; `mean`, `std` per input channel: for `"both"` the raw
#'   bands' then the scene-scaled bands'; and `scene = list(q = c(2, 98))` for
#'   `normalize = "scene"` and `"both"`) and `meta` (everything recorded in the model
#'   file). It has
#'   `print()` and `plot()` methods and can be given to [predict_raster()] as the model. A patch
#'   set without a split is an error of class `rsunet_input_error`.
#' @template example-patches
#' @template example-model
#' @examplesIf rsunet_available()
#' model
#' plot(model)
#' @export
train_unet <- function(patches, out, depth = 4, filters = 16, batch_norm = TRUE, dropout = 0,
                       loss = "bce_dice", class_weights = NULL, epochs = 20, batch_size = 16,
                       learning_rate = 1e-3, schedule = "constant", patience = 5,
                       monitor = "val_loss",
                       augmentation = TRUE, normalize = "dataset", seed = 0,
                       mixed_precision = "auto", sampling = "uniform", strategy = "auto",
                       stream = "auto", resume = TRUE,
                       overwrite = FALSE, progress = TRUE, callbacks = NULL) {
  out <- path.expand(out)
  weights <- if (is.null(class_weights) || is.character(class_weights)) class_weights else as.list(as.numeric(class_weights))
  .py_call(do.call(.py_raw("training")$train_unet, c(
    .py_args(flags = c("batch_norm", "resume", "overwrite", "progress"), ints = "seed",
             paths = "patches"),
    list(out = out, depth = .as_count(depth, "depth"), filters = .as_count(filters, "filters"),
         dropout = as.numeric(dropout), loss = loss, class_weights = weights,
         epochs = .as_count(epochs, "epochs"), batch_size = .as_count(batch_size, "batch_size"),
         learning_rate = as.numeric(learning_rate), schedule = schedule,
         patience = .as_count(patience, "patience"), monitor = monitor,
         augmentation = .as_augmentation(augmentation), normalize = normalize,
         mixed_precision = mixed_precision, sampling = sampling, strategy = strategy,
         stream = stream, callbacks = callbacks)
  )))
  load_model(out)
}

#' Load a trained model
#'
#' Reads a model written by [train_unet()] (or a plain Keras `.keras` model: no
#' normalisation then, classes `0..K-1`) in Keras' safe mode, and its training history
#' (`<name>_history.csv` beside it) where present.
#'
#' @param path the `.keras` file.
#' @return An object of class `rsunet_model` (see [train_unet()]); `history` is `NULL`
#'   when no log is found. A file that is not a model is an error of class
#'   `rsunet_model_format_error`.
#' @examplesIf rsunet_available()
#' # a tiny model shipped for the tests; train_unet() makes real ones
#' m <- load_model(system.file("extdata", "testvectors", "prediction_model.keras", package = "rsunet"))
#' m
#' m$classes
#' @export
load_model <- function(path) {
  path <- normalizePath(path.expand(path), mustWork = FALSE)
  m <- .py_call(.py_raw("training")$load_model(path))
  meta <- reticulate::py_to_r(m$meta)
  classes <- reticulate::py_to_r(m$classes)
  norm <- reticulate::py_to_r(m$normalization)
  csv <- file.path(dirname(path), paste0(sub("\\.keras$", "", basename(path)), "_history.csv"))
  history <- if (file.exists(csv)) utils::read.csv(csv, check.names = FALSE) else NULL
  structure(list(
    path = path,
    history = history,
    classes = stats::setNames(vapply(classes, as.character, character(1)), names(classes)),
    bands = reticulate::py_to_r(m$bands),
    depth = reticulate::py_to_r(m$depth),
    multiple = reticulate::py_to_r(m$multiple),
    patch_size = reticulate::py_to_r(m$patch_size),
    normalization = .as_normalization(norm),
    meta = meta
  ), class = "rsunet_model")
}

# mean and std as numeric vectors; scene (all but normalize = "dataset") as list(q = c(2, 98)),
# with joint = TRUE for "scene_joint"
.as_normalization <- function(norm) {
  if (is.null(norm)) return(NULL)
  lapply(norm, function(v) if (is.list(v) && !is.null(names(v))) lapply(v, unlist) else unlist(v))
}

#' @export
print.rsunet_model <- function(x, ...) {
  cat("<rsunet_model>", x$path, "\n")
  cat(sprintf("  %d bands -> %d classes: %s\n", as.integer(x$bands), length(x$classes),
              paste(names(x$classes), x$classes, sep = "=", collapse = ", ")))
  if (!is.null(x$depth)) {
    cat(sprintf("  U-Net depth %d (windows: multiples of %d), trained on %s px patches\n",
                as.integer(x$depth), as.integer(x$multiple), format(x$patch_size)))
  }
  if (!is.null(x$normalization$scene)) {
    both <- identical(x$normalization$normalize, "both")
    joint <- isTRUE(x$normalization$scene$joint)
    cat(sprintf("  inputs %sscaled per scene: its %s %% band percentiles -> 0, 1%s\n",
                if (both) "both raw (2 x bands channels) and " else "",
                paste(x$normalization$scene$q, collapse = " and "),
                if (joint) ", all bands together (lowest low, highest high)" else ""))
  }
  h <- x$history
  if (!is.null(h) && nrow(h)) {
    best <- if (!is.null(x$meta$best_epoch)) x$meta$best_epoch else h$epoch[which.min(h$val_loss)]
    row <- h[h$epoch == best, , drop = FALSE]
    shown <- intersect(c("val_loss", "val_accuracy", "val_f1", "val_iou"), names(h))
    cat(sprintf("  %d epochs; best epoch %d: %s\n", nrow(h), as.integer(best),
                paste(sprintf("%s %.4f", shown, unlist(row[shown])), collapse = ", ")))
  }
  invisible(x)
}

#' @export
plot.rsunet_model <- function(x, ...) {
  h <- x$history
  if (is.null(h) || !nrow(h)) .abort("this model has no training history to plot", "rsunet_input_error")
  metrics <- intersect(c("loss", "f1", "iou", "accuracy"), names(h))
  old <- graphics::par(mfrow = c(1, length(metrics)))
  on.exit(graphics::par(old))
  for (m in metrics) {
    v <- c(h[[m]], h[[paste0("val_", m)]])
    graphics::plot(h$epoch, h[[m]], type = "b", ylim = range(v, na.rm = TRUE), xlab = "epoch",
                   ylab = m, main = m, col = "steelblue", ...)
    if (!is.null(h[[paste0("val_", m)]])) {
      graphics::lines(h$epoch, h[[paste0("val_", m)]], type = "b", col = "darkorange")
    }
  }
  graphics::legend("topright", c("train", "validation"), col = c("steelblue", "darkorange"),
                   lty = 1, bty = "n")
  invisible(x)
}

# predict_raster() and any Python call receive the model's file.
#' @exportS3Method reticulate::r_to_py
r_to_py.rsunet_model <- function(x, convert = FALSE) {
  reticulate::r_to_py(x$path, convert = convert)
}
