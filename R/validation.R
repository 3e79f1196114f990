#' Cross-validate the U-Net and the Random Forest over scenes (or spatial blocks)
#'
#' How good will the map of a scene the model has never seen be? Each fold trains both
#' models on the other folds' scenes, maps its own held-out scenes with
#' [predict_raster()] and assesses the maps against their masks with [assess_map()]; a
#' scene is never used for training in the fold that assesses it. With `by = "block"`
#' (one or two large scenes) square blocks of `block` x `block` patch cells are held out
#' instead, training patches touching a held-out block are left out of that fold, and
#' maps are assessed inside the held-out blocks only. An interrupted run continues where
#' it stopped when called again with the same arguments.
#'
#' @param source a workflow configuration file (see [example_config()]): all its scenes,
#'   `train` and `test`, are cross-validated with its settings; or a patch folder from
#'   [make_patches()] (its scenes' images and masks must still be where they were), with
#'   the settings of `config`.
#' @param out the output folder: `folds.csv`, `fold-<k>/` (models and maps),
#'   `scores.csv`, `summary.csv`, `figures/cross_validation.png`.
#' @param folds number of folds (at least 2).
#' @param by `"scene"` or `"block"`.
#' @param block block edge in patch cells, for `by = "block"`.
#' @param seed the folds' and the models' random seed (default: the configuration's).
#' @param models `"unet"`, `"random_forest"` or both.
#' @param config for a patch-folder `source`: a configuration file whose sections
#'   (`split_patches`, `unet`, `train_unet`, `train_baseline`, `predict_raster`,
#'   `assess_map`) set the steps' arguments; `NULL` uses the functions' defaults.
#' @param overwrite replace an earlier cross-validation in `out` made with other settings.
#' @param progress show progress bars.
#' @return An object of class `rsunet_cv`: a list with `scores` (each model on each fold,
#'   `scene == "all"`, and on each scene), `summary` (per model and figure: mean, sd,
#'   min, max over folds and the pooled figure), `folds` (the fold of each scene or
#'   block) and `out`. `print()` shows macro F1 as mean +/- sd; `plot()` draws, as
#'   `figures/cross_validation.png` does, each fold's macro F1 per model (folds joined by
#'   lines) and each scene's: the U-Net against the Random Forest, or with one model its
#'   scenes worst first.
#' @examplesIf rsunet_available()
#' # the Random Forest only, 2 folds over the bundled chips: quick (add "unet" for both)
#' cv <- cross_validate(example_config(quick = TRUE), tempfile("rsunet-cv-"), folds = 2,
#'                      models = "random_forest", progress = FALSE)
#' cv
#' plot(cv)
#' @export
cross_validate <- function(source, out, folds = 5, by = "scene", block = 4, seed = NULL,
                           models = c("unet", "random_forest"), config = NULL,
                           overwrite = FALSE, progress = TRUE) {
  res <- .py_call(do.call(.py_raw("validation")$cross_validate, c(
    .py_args(flags = c("overwrite", "progress"), paths = c("source", "out", "config")),
    list(folds = .as_count(folds, "folds"), by = by, block = .as_count(block, "block"),
         seed = if (is.null(seed)) NULL else .as_count(seed, "seed"), models = as.list(models))
  )))
  structure(list(scores = .df_from_py(res$scores), summary = .df_from_py(res$summary),
                 folds = .df_from_py(res$folds), out = reticulate::py_str(res$out)),
            class = "rsunet_cv")
}

#' @export
print.rsunet_cv <- function(x, ...) {
  cat(sprintf("<rsunet_cv> %d folds, %s\n", length(unique(x$folds$fold)), x$out))
  f1 <- x$summary[x$summary$metric == "macro_f1", , drop = FALSE]
  for (i in seq_len(nrow(f1))) {
    cat(sprintf("  %13s: macro F1 %.3f +/- %.3f (folds %.3f to %.3f; pooled %.3f)\n",
                f1$model[i], f1$mean[i], f1$sd[i], f1$min[i], f1$max[i], f1$pooled[i]))
  }
  invisible(x)
}

#' @export
plot.rsunet_cv <- function(x, ...) {
  old <- graphics::par(mfrow = c(1, 2))
  on.exit(graphics::par(old))
  .plot_cv_folds(x, ...)
  .plot_cv_scenes(.cv_by_scene(x))
  invisible(x)
}

.plot_cv_folds <- function(x, ...) {
  per_fold <- x$scores[x$scores$scene == "all", , drop = FALSE]
  wide <- stats::reshape(per_fold[c("fold", "model", "macro_f1")], idvar = "fold",
                         timevar = "model", direction = "wide")
  values <- as.matrix(wide[, -1, drop = FALSE])
  colnames(values) <- sub("^macro_f1\\.", "", colnames(values))
  graphics::matplot(seq_len(ncol(values)), t(values), type = "b", pch = 19, lty = 1,
                    col = "grey60", xaxt = "n", xlim = c(0.7, ncol(values) + 0.3),
                    xlab = "", ylab = "macro F1 of the held-out maps",
                    main = "each fold", ...)
  graphics::axis(1, at = seq_len(ncol(values)), labels = gsub("_", " ", colnames(values)))
  graphics::points(seq_len(ncol(values)), colMeans(values), pch = 18, cex = 2)
}

# Each held-out scene's macro F1, one column per model (rows named by scene).
.cv_by_scene <- function(x) {
  scenes <- x$scores[x$scores$scene != "all", c("scene", "model", "macro_f1")]
  wide <- stats::reshape(scenes, idvar = "scene", timevar = "model", direction = "wide")
  values <- as.matrix(wide[, -1, drop = FALSE])
  dimnames(values) <- list(wide$scene, sub("^macro_f1\\.", "", colnames(values)))
  values
}

.plot_cv_scenes <- function(values) {
  if (all(c("unet", "random_forest") %in% colnames(values))) {
    u <- values[, "unet"]
    rf <- values[, "random_forest"]
    lo <- min(u, rf, na.rm = TRUE) - 0.02
    graphics::plot(rf, u, pch = 19, cex = 0.7, xlim = c(lo, 1), ylim = c(lo, 1),
                   xlab = "Random Forest macro F1", ylab = "U-Net macro F1",
                   main = sprintf("each scene: U-Net ahead on %d of %d", sum(u > rf, na.rm = TRUE),
                                  nrow(values)))
    graphics::abline(0, 1, lty = 2, col = "grey60")
    apart <- abs(u - rf) > 0.1  # name the scenes where the two models part ways
    graphics::text(rf[apart], u[apart], rownames(values)[apart], pos = 4, cex = 0.6)
  } else {
    ranked <- sort(values[, 1])
    graphics::barplot(ranked, horiz = TRUE, las = 1, cex.names = 0.5, xpd = FALSE,
                      xlim = c(max(0, min(ranked) - 0.05), 1),
                      xlab = paste(gsub("_", " ", colnames(values)[1]), "macro F1"),
                      main = "each scene, worst first")
  }
}
