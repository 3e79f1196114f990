#' Train the pixel-based Random Forest baseline
#'
#' The course's "traditional ML" comparison: pixels become a table (one row per pixel,
#' one column per band) and a Random Forest learns the classes from it. The pixels are
#' drawn, class-balanced, from the same training patches the U-Net learns from (split
#' `"train"` of [split_patches()]); unknown pixels (255) are never drawn. The saved
#' model maps whole scenes with [predict_raster()] and is scored with [assess_map()],
#' exactly like a U-Net.
#'
#' @param patches a patch folder from [make_patches()], split by [split_patches()].
#' @param out the model file to write (`.joblib`; a Python pickle: load only files you trust).
#' @param n_per_class training pixels drawn per class.
#' @param n_trees number of trees.
#' @param normalize `"dataset"`: raw pixel values, the course's table; `"scene"`: each
#'   scene's 2 and 98 % band percentiles mapped to 0 and 1, as [train_unet()] can
#'   ([predict_raster()] then scales each scene by its own percentiles); `"scene_joint"`:
#'   one stretch for all bands, as [train_unet()]'s; `"both"`: the raw
#'   and the scene-scaled value of each band side by side (2 x bands features), as
#'   [train_unet()]'s `"both"`.
#' @param seed random seed for the sample and the forest.
#' @param overwrite replace an existing `out` (otherwise error class
#'   `rsunet_output_exists_error`).
#' @return `out`, the path of the saved model, invisibly.
#' @template example-patches
#' @examplesIf rsunet_available()
#' rf <- train_baseline(patches, file.path(dir, "random_forest.joblib"), n_per_class = 500,
#'                      n_trees = 10)
#' map <- predict_raster(rf, ex$test$images[1], file.path(dir, "map_rf.tif"), window = 256,
#'                       overlap = 32, progress = FALSE)
#' terra::plot(map)
#' @export
train_baseline <- function(patches, out, n_per_class = 5000, n_trees = 100,
                           normalize = "dataset", seed = 0, overwrite = FALSE) {
  .py_call(do.call(.py("baseline")$train_baseline, c(
    .py_args(flags = "overwrite", ints = "seed", paths = c("patches", "out")),
    list(n_per_class = .as_count(n_per_class, "n_per_class"), n_trees = .as_count(n_trees, "n_trees"),
         normalize = normalize)
  )))
  invisible(path.expand(out))
}
