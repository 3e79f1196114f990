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
#' @examples
#' \dontrun{
#' summary <- run_workflow(example_config(), out = "rsunet-demo")
#' summary
#' }
run_workflow <- function(config, out = NULL, overwrite = FALSE) {
  out <- if (is.null(out)) NULL else path.expand(out)
  summary <- .py_call(.py_raw("workflow")$run_workflow(path.expand(config), out = out,
                                                       overwrite = isTRUE(overwrite)))
  .df_from_py(summary)
}

#' The bundled example configuration
#'
#' @param full `FALSE` for the demo (about 10 minutes on a 2-core CPU), `TRUE` for the
#'   longer configuration that gives the best map from the same data.
#' @return The path of the YAML file; copy it to start your own.
#' @examples
#' \dontrun{
#' cat(readLines(example_config()), sep = "\n")
#' }
example_config <- function(full = FALSE) {
  .py_call(reticulate::py_str(.py("workflow")$example_config(full = isTRUE(full))))
}
