#' Run the whole workflow from one configuration file
#'
#' Masks, patches, a spatial train/validation split, U-Net training, the pixel Random
#' Forest baseline, prediction of the held-aside scenes with both models, and their
#' assessment on the same pixels: the course's steps end to end. Each section of the
#' file is named after the function it configures and its keys are that function's
#' arguments (see [example_config()]).
#'
#' @param config a YAML or TOML configuration file.
#' @param out output folder (default: the configuration's `out`).
#' @param overwrite replace the outputs of an earlier run in `out`.
#' @return The summary table (a data.frame, also `out/summary.csv`): one row per model
#'   with overall accuracy, kappa and per-class F1 and IoU on the held-aside scenes.
#'   Maps are in `out/maps/`, figures in `out/figures/`, models in `out/models/`, and
#'   each model's accuracy on each scene in `out/assessment/per_scene.csv`.
#' @examplesIf rsunet_available()
#' \donttest{
#' # the whole workflow on the bundled chips in about a minute (a rough map)
#' summary <- run_workflow(example_config(quick = TRUE), out = tempfile("rsunet-quick-"))
#' summary
#' }
#' @export
run_workflow <- function(config, out = NULL, overwrite = FALSE) {
  summary <- .py_call(do.call(.py_raw("workflow")$run_workflow,
                              .py_args(flags = "overwrite", paths = c("config", "out"))))
  .df_from_py(summary)
}

#' The bundled example configuration
#'
#' @param full `TRUE` for the longer configuration that gives the best map from the same
#'   data (about 20 minutes on a 2-core CPU).
#' @param quick `TRUE` for a configuration of about a minute (a small U-Net, 2 epochs), to
#'   try an installation. Neither: the demo (about 5 minutes on a 2-core CPU).
#' @return The path of the YAML file; copy it to start your own.
#' @examplesIf rsunet_available()
#' cat(readLines(example_config(quick = TRUE)), sep = "\n")
#' @export
example_config <- function(full = FALSE, quick = FALSE) {
  .py_call(reticulate::py_str(do.call(.py("workflow")$example_config,
                                      .py_args(flags = c("full", "quick")))))
}

#' The bundled example scenes
#'
#' Thirteen 3-band 8-bit GeoTIFF chips of the Amazon forest with their reference masks
#' (palette PNGs on the same grids: 1 = forest, 2 = non-forest): ten for training, three
#' held aside. A subset of Bragagnolo et al. (2019), Zenodo record 3233081; see the
#' `SOURCE.md` file. Needs no Python.
#'
#' @return A list: `root` (the folder), `source` (`SOURCE.md`), and `train` and `test`,
#'   each a list of `images` and `masks` (paths, in the same order).
#' @examples
#' ex <- example_data()
#' basename(ex$train$images)
#' terra::plotRGB(terra::rast(ex$test$images[1]))
#' @export
example_data <- function() {
  root <- system.file("extdata", "amazon", package = "rsunet", mustWork = TRUE)
  part <- function(name) {
    images <- sort(list.files(file.path(root, name, "images"), pattern = "\\.tif$", full.names = TRUE))
    masks <- file.path(root, name, "masks", sub("\\.tif$", ".png", basename(images)))
    list(images = images, masks = masks)
  }
  list(root = root, source = file.path(root, "SOURCE.md"), train = part("train"), test = part("test"))
}
