#' Predict a whole scene with sliding windows and write a blended GeoTIFF
#'
#' Slides a square window over every pixel of the scene (edges included; a scene
#' smaller than one window is padded), predicts the windows in batches, blends the
#' overlapping predictions and writes one GeoTIFF with the image's CRS and extent: the
#' course's "crop, predict, mosaic", in one streaming pass without tile files. Memory
#' does not grow with the scene's height (only the rows of the windows in flight are
#' held). Nodata pixels get no weight and are written as nodata. A run that was
#' interrupted continues where it stopped when called again the same way, and gives the
#' same file an uninterrupted run gives; the output's name appears only once it is
#' complete.
#'
#' @param model the trained model: a `.keras` file (from `train_unet()`, whose
#'   normalisation and classes are used, or a plain Keras model), a `.joblib` baseline,
#'   or a model object returned by `load_model()`.
#' @param image a raster file or SpatRaster; or, for many scenes, a character vector of
#'   files, a list of files or SpatRasters (a list of one is many scenes too), or a
#'   folder of GeoTIFFs.
#' @param out the GeoTIFF to write; a folder for many scenes (one `<image name>.tif` each).
#' @param window window edge in pixels, a multiple of `2^depth` of the model (error class
#'   `rsunet_patch_size_error` otherwise).
#' @param overlap pixels shared by neighbouring windows, `0 <= overlap < window`.
#' @param blend how overlapping predictions combine: `"hann"` (weighted average, smooth,
#'   no seams), `"centre"` (each pixel from the window where it lies furthest from an
#'   edge: the course's margin cropping) or `"average"`.
#' @param tta test-time augmentation: average the 8 flips and rotations of each window.
#' @param output `"classes"` (class ids, nodata 255), `"probabilities"` (one layer per
#'   class) or `"both"` (probabilities in `<out name>_probabilities.tif`).
#' @param prob_dtype `"float32"` or `"uint8"` (probability times 254, nodata 255).
#' @param batch_size windows per model call, or `"auto"`: as many as make about 2^17
#'   pixels on a CPU (two 256 x 256 windows, one 512 x 512), where calls whose feature
#'   maps fit the processor's caches run fastest, and 2^20 pixels on a GPU.
#' @param precision what a Keras model computes in: `"float32"`, `"bfloat16"` or `"auto"`
#'   (bfloat16 on a CPU with native bfloat16 arithmetic, AVX512_BF16 or AMX: about 1.7
#'   times faster, labels 99.97 % identical or more; float32 elsewhere). With `"auto"` and
#'   `"bfloat16"` the batch normalisations are folded into the convolutions before them
#'   (about 10 % faster, probabilities within about 1e-6). `"float32"` gives maps that
#'   match the model's own predictions bit for bit. Baselines ignore it.
#' @param uncertainty `NULL` (none), or also write `<out name>_uncertainty.tif`, one layer
#'   in 0..1 (0 = sure) from the same pass: `"entropy"` (entropy of the blended class
#'   probabilities over log K), `"margin"` (`1 - (p1 - p2)` of the two most likely classes)
#'   or, with `tta = TRUE`, `"tta"` (how much the 8 flips and rotations disagree: the
#'   class probabilities' variance over the views, averaged over classes, times 4), or
#'   `"mc_dropout"` (Monte Carlo dropout: `mc_passes` predictions with the model's dropout
#'   on, their disagreement measured as for `"tta"`; the map is then their mean; for models
#'   trained with `dropout > 0`; repeatable, since the random masks follow the pixels).
#'   Written as float32, or as uint8 (times 254, nodata 255) with `prob_dtype = "uint8"`.
#' @param mc_passes stochastic passes for `uncertainty = "mc_dropout"`.
#' @param cog write Cloud-Optimized GeoTIFFs.
#' @param overwrite replace existing outputs (otherwise error class
#'   `rsunet_output_exists_error`).
#' @param resume continue an interrupted run of the same call; `FALSE` starts afresh.
#' @param progress show a progress bar (on a cluster, over blocks or scenes, and print
#'   the dask dashboard's address).
#' @param cluster where to compute: `NULL` (this R session's Python, one process),
#'   `"local"` or `"local:N"` (N worker processes on this machine, one thread each), or
#'   the address of a running dask scheduler (`"tcp://host:8786"`). Many scenes are one
#'   task each, one scene one task per block of windows; the written files are
#'   byte-identical to those of one process when every model call holds one window
#'   (`batch_size = 1`); otherwise probabilities can differ by the model's float32
#'   rounding (up to 5e-7 seen).
#'   Workers read the model and the images and write beside `out` under the same
#'   paths: a file system every worker shares (error
#'   class `rsunet_worker_path_error` otherwise). Needs the Python extra `rsunet[dask]`
#'   (`make setup` installs it; otherwise `reticulate::py_install(c("dask",
#'   "distributed"))`, or error class `rsunet_dependency_error`).
#' @return For one scene, a SpatRaster read from the written file(s) (class ids, and/or
#'   layers `p_<class>`, and `uncertainty_<kind>`; nodata as `NA`). For many scenes, the
#'   output paths: a character vector, or for `output = "both"` or an `uncertainty` a
#'   data.frame with columns `image` and one per file written (`classes`, `probabilities`,
#'   `uncertainty`). An image whose band count or data type differs from the model's
#'   is an error of class `rsunet_band_mismatch_error`.
#' @template example-patches
#' @template example-model
#' @examplesIf rsunet_available()
#' map <- predict_raster(model, ex$test$images[1], file.path(dir, "map.tif"), window = 256,
#'                       overlap = 32, blend = "hann", progress = FALSE)
#' terra::plot(map)
#' @export
predict_raster <- function(model, image, out, window = 512, overlap = 64, blend = "hann",
                           tta = FALSE, output = "classes", prob_dtype = "float32",
                           batch_size = "auto", precision = "auto", uncertainty = NULL, mc_passes = 8,
                           cog = FALSE,
                           overwrite = FALSE, resume = TRUE, progress = TRUE, cluster = NULL) {
  images <- .as_scenes(image)
  model <- if (is.character(model)) path.expand(model) else model
  result <- .py_call(do.call(.py("prediction")$predict_raster, c(
    list(model, images$value), .py_args(flags = c("tta", "cog", "overwrite", "resume", "progress"),
                                        paths = "out"),
    list(window = .as_count(window, "window"), overlap = .as_count(overlap, "overlap"), blend = blend,
         output = output, prob_dtype = prob_dtype, batch_size = .as_count_or_auto(batch_size, "batch_size"),
         precision = precision, uncertainty = uncertainty,
         mc_passes = .as_count(mc_passes, "mc_passes"), cluster = .as_cluster(cluster))
  )))
  result <- .r(result)
  several <- output == "both" || !is.null(uncertainty)  # Python returns {kind: path}
  as_paths <- function(x) .py_paths(if (several) x else list(x))
  if (!images$many) return(terra::rast(unname(as_paths(result))))
  paths <- lapply(result, as_paths)
  if (!several) return(vapply(paths, function(p) p[[1]], character(1)))
  kinds <- names(paths[[1]])
  columns <- lapply(stats::setNames(kinds, kinds), function(k) vapply(paths, `[[`, character(1), k))
  data.frame(image = images$paths, columns, stringsAsFactors = FALSE)
}

# image -> what Python takes (a path, a list of paths, a folder), and whether many.
.as_scenes <- function(image) {
  if (is.character(image) && length(image) == 1 && dir.exists(image)) {
    folder <- normalizePath(image)
    tifs <- list.files(folder, pattern = "\\.(tif|tiff|vrt|img|jp2)$", ignore.case = TRUE,
                       full.names = TRUE)
    return(list(value = folder, many = TRUE, paths = sort(tifs)))
  }
  if (is.list(image) || (is.character(image) && length(image) > 1)) {
    paths <- vapply(image, .as_raster_path, character(1), USE.NAMES = FALSE)
    return(list(value = as.list(paths), many = TRUE, paths = paths))
  }
  path <- .as_raster_path(image)
  list(value = path, many = FALSE, paths = path)
}

# cluster = NULL, "local", "local:N", "tcp://..." (or a Python distributed.Client).
.as_cluster <- function(cluster) {
  if (is.null(cluster) || inherits(cluster, "python.builtin.object")) return(cluster)
  if (!is.character(cluster) || length(cluster) != 1 || is.na(cluster)) {
    .abort("`cluster` must be NULL, \"local\", \"local:N\" or a scheduler address",
           "rsunet_input_error")
  }
  cluster
}

.as_count_or_auto <- function(x, name) {
  if (identical(x, "auto")) x else .as_count(x, name)
}

.as_count <- function(x, name) {
  if (!is.numeric(x) || length(x) != 1 || is.na(x) || x != round(x)) {
    .abort(paste0("`", name, "` must be a single whole number"), "rsunet_input_error")
  }
  as.integer(x)
}

# Python pathlib paths (a list or a dict of them) -> named character vector.
.py_paths <- function(x) {
  vapply(x, function(p) if (is.character(p)) p else reticulate::py_str(p), character(1))
}
