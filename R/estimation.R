#' Draw a stratified random sample of a class map for accuracy assessment
#'
#' Draws, within each class of the map (the strata of Olofsson et al. 2014), pixels at
#' random without replacement among its valid pixels (neither `ignore` nor nodata), and
#' writes their centres as a GeoPackage with an empty `reference` column for a person
#' to fill (in QGIS), or filled from a reference raster. The map is read in row blocks
#' (twice: counts per class, then the drawn pixels), so memory does not grow with it.
#' Pass the labelled points to `assess_map(map, points, design = "stratified")`.
#'
#' @param map the class map: a GeoTIFF path or a SpatRaster.
#' @param out the GeoPackage to write.
#' @param n the total sample size (needed unless `allocation` gives the counts).
#' @param allocation `"proportional"` (to each class's pixel count), `"equal"`, or the
#'   counts per class as a named vector or list, e.g. `c("0" = 50, "1" = 100)`. Shares
#'   are rounded by largest remainder so that they sum to `n`; a class with fewer pixels
#'   than its share gives all of them (with a warning).
#' @param seed seed of the draw.
#' @param reference optional label raster (path or SpatRaster, any grid) whose class at
#'   each point fills `reference`; `NULL` leaves it empty.
#' @param classes optional class names, e.g. `c("0" = "forest", "1" = "water")`.
#' @param ignore the value marking unknown pixels (255).
#' @param use_nodata also leave out the pixels the map marks as nodata.
#' @param block_rows rows read per block; `NULL` reads about 2^19 pixels per block.
#' @param overwrite replace an existing `out` (otherwise an error of class
#'   `rsunet_output_exists_error`).
#' @return The points read back from `out` (an `sf` object if 'sf' is installed, else a
#'   SpatVector): `point_id`, `map_class`, `map_class_name`, `row`, `col` (the pixel,
#'   0-based), `reference`.
#' @references Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E.,
#'   Wulder, M. A. (2014). Good practices for estimating area and assessing accuracy of
#'   land change. Remote Sensing of Environment 148, 42-57.
#' @examplesIf rsunet_available()
#' ex <- example_data()
#' map <- make_mask(ex$test$images[1], ex$test$masks[1], tempfile(fileext = ".tif"),
#'                  classes = c("1" = "forest", "2" = "background"))
#' pts <- sample_points(map, tempfile(fileext = ".gpkg"), n = 60, allocation = "equal")
#' table(pts$map_class)
#' @export
sample_points <- function(map, out, n = NULL, allocation = "proportional", seed = 0,
                          reference = NULL, classes = NULL, ignore = 255, use_nodata = TRUE,
                          block_rows = NULL, overwrite = FALSE) {
  out <- path.expand(out)
  if (!is.character(allocation)) allocation <- as.list(allocation)
  .py_call(do.call(.py_raw("estimation")$sample_points, c(
    list(.as_raster_path(map), out, allocation = allocation,
         reference = if (is.null(reference)) NULL else .as_raster_path(reference),
         classes = if (is.null(classes)) NULL else as.list(classes)),
    .py_args(flags = c("use_nodata", "overwrite"), ints = c("n", "seed", "ignore", "block_rows"))
  )))
  .vector_from_file(out)
}

# A GeoPackage rsunet wrote, as sf (if installed) or a terra SpatVector.
.vector_from_file <- function(path) {
  if (requireNamespace("sf", quietly = TRUE)) sf::st_read(path, quiet = TRUE) else terra::vect(path)
}

# Columns of a dict of lists (as_dict() of a DataFrame) as a data.frame; None -> NA.
.df_from_lists <- function(cols) {
  cols <- lapply(cols, function(v) unlist(lapply(v, function(x) if (is.null(x)) NA else x)))
  as.data.frame(cols, stringsAsFactors = FALSE, check.names = FALSE)
}

.matrix_from_lists <- function(rows, names, dimnames_names) {
  m <- do.call(rbind, lapply(rows, function(r) as.numeric(unlist(r))))
  dimnames(m) <- stats::setNames(list(names, names), dimnames_names)
  m
}

.area_estimate_from_py <- function(d) {
  names <- unlist(d$classes)
  structure(list(
    per_class = .df_from_lists(d$per_class), overall = d$overall,
    error_matrix = .matrix_from_lists(d$error_matrix, names, c("reference", "map")),
    confusion = .matrix_from_lists(d$confusion, names, c("reference", "map"))
  ), class = "rsunet_area_estimate")
}

#' @rdname assess_map
#' @export
print.rsunet_area_estimate <- function(x, ...) {
  o <- x$overall
  cat(sprintf("rsunet stratified estimate from %d points: OA %.4f +/- %.4f (95 %%), total area %s ha (%s)\n\n",
              as.integer(o$n), o$overall_accuracy, o$overall_accuracy_ci,
              format(o$total_area_ha, big.mark = ","), o$area_method))
  cols <- c("class", "mapped_ha", "n", "users_accuracy", "users_ci", "producers_accuracy",
            "producers_ci", "area_ha", "area_ci_ha")
  print(x$per_class[cols], digits = 4, row.names = FALSE)
  invisible(x)
}

#' Compare two maps of one scene: differences with block-bootstrap intervals, McNemar
#'
#' Scores both maps on the same pixels (valid in both maps and the reference) and gives
#' the difference (`a - b`) in overall accuracy, Cohen's kappa and each class's F1 with
#' a 95 % interval from a spatial block bootstrap: the map is cut into `block` x `block`
#' pixel squares that are resampled with replacement `n_boot` times, so neighbouring
#' pixels, whose errors go together, are not taken as independent evidence (choose
#' `block` larger than the maps' error patches). McNemar's test runs on a sample thinned
#' to one pixel every `thin` rows and columns. The maps are streamed in strips.
#'
#' @param map_a,map_b the two class maps (paths or SpatRasters) on one grid, e.g. the
#'   U-Net's and the Random Forest's; or lists (or character vectors) of the maps of
#'   several scenes, whose blocks are pooled, with `reference` a list of as many.
#' @param reference the truth, as for [assess_map()]: a label raster (any grid) or
#'   polygons with `field`.
#' @param block the side of the bootstrap's blocks, in pixels.
#' @param n_boot the number of bootstrap replicates.
#' @param seed seed of the bootstrap.
#' @param thin the spacing of McNemar's sample in pixels (`NULL`: `block`).
#' @param field,unlabelled for polygon references, as in [assess_map()].
#' @param classes optional class names, e.g. `c("0" = "forest", "1" = "water")`.
#' @param ignore the unknown value (255).
#' @param use_nodata also leave out the pixels the files mark as nodata.
#' @param png optional path of a figure: where the maps disagree, and the differences
#'   with their intervals.
#' @param overwrite replace an existing `png`.
#' @return A list of class `rsunet_comparison`: `table` (a data.frame: `metric`, `a`,
#'   `b`, `difference`, `lower`, `upper`), `mcnemar` (a list: `n`, `both_right`,
#'   `a_only`, `b_only`, `both_wrong`, `statistic`, `p_value`, the exact binomial
#'   p-value) and `settings`.
#' @examplesIf rsunet_available()
#' ex <- example_data()
#' truth <- make_mask(ex$test$images[1], ex$test$masks[1], tempfile(fileext = ".tif"),
#'                    classes = c("1" = "forest", "2" = "background"))
#' # two degraded copies of the truth stand in for two models' maps
#' v <- terra::values(truth)
#' a <- b <- truth
#' set.seed(1)
#' terra::values(a) <- ifelse(stats::runif(length(v)) < 0.05, 1 - v, v)
#' terra::values(b) <- ifelse(stats::runif(length(v)) < 0.15, 1 - v, v)
#' cmp <- compare_maps(a, b, truth, block = 32, n_boot = 200,
#'                     classes = c("0" = "background", "1" = "forest"))
#' cmp
#' @export
compare_maps <- function(map_a, map_b, reference, block = 64, n_boot = 500, seed = 0,
                         thin = NULL, field = NULL, unlabelled = "background", classes = NULL,
                         ignore = 255, use_nodata = TRUE, png = NULL, overwrite = FALSE) {
  res <- .py_call(do.call(.py("estimation")$compare_maps, c(
    list(.scene_paths(map_a, .as_raster_path), .scene_paths(map_b, .as_raster_path),
         .scene_paths(reference, .as_labels_path), field = field, unlabelled = unlabelled,
         classes = if (is.null(classes)) NULL else as.list(classes)),
    .py_args(flags = c("use_nodata", "overwrite"),
             ints = c("block", "n_boot", "seed", "thin", "ignore"), paths = "png")
  )))
  d <- .r(res$as_dict())
  structure(list(table = .df_from_lists(d$table), mcnemar = d$mcnemar, settings = d$settings),
            class = "rsunet_comparison")
}

# One path, or a list of them for several scenes (a character vector or a list).
.scene_paths <- function(x, convert) {
  many <- (is.character(x) && length(x) > 1) ||
    (is.list(x) && !inherits(x, c("SpatRaster", "SpatVector", "data.frame")))
  if (many) unname(lapply(x, convert)) else convert(x)
}

#' @rdname compare_maps
#' @param x an `rsunet_comparison`.
#' @param ... ignored.
#' @export
print.rsunet_comparison <- function(x, ...) {
  s <- x$settings
  cat(sprintf("rsunet comparison of two maps (a - b) on %s pixels; 95 %% intervals from %d bootstrap replicates of %d blocks of %d pixels\n\n",
              format(s$n, big.mark = ","), as.integer(s$n_boot), as.integer(s$n_blocks), as.integer(s$block)))
  print(x$table, digits = 4, row.names = FALSE)
  m <- x$mcnemar
  cat(sprintf("\nMcNemar on %d thinned pixels: %d only a right, %d only b right, chi2 %.3f, exact p %.4g\n",
              as.integer(m$n), as.integer(m$a_only), as.integer(m$b_only), m$statistic, m$p_value))
  invisible(x)
}
