#' Suggest where to label next: the most uncertain places, spread apart
#'
#' Reads any single-band uncertainty raster (higher = less certain) in row blocks and
#' proposes the `n` most uncertain places at least `min_distance` pixels apart, greedily
#' in order of uncertainty, as points or patch-sized boxes in a GeoPackage ready to
#' digitise in QGIS: the active-learning loop, one call per round. Nodata, `NaN` and
#' infinite pixels are never proposed.
#'
#' @param uncertainty the uncertainty raster: a path or a SpatRaster.
#' @param out the GeoPackage to write.
#' @param n how many places to propose.
#' @param min_distance the least distance between two proposals, in pixels.
#' @param shape `"point"` (pixel centres) or `"box"` (`size` x `size` pixel squares,
#'   moved inside the scene where they would cross its edge).
#' @param size the box side in pixels (e.g. the model's patch size).
#' @param band the band to read.
#' @param max_candidates the most candidate pixels kept in memory.
#' @param block_rows rows read per block; `NULL` reads about 2^19 pixels per block.
#' @param overwrite replace an existing `out`.
#' @return The suggestions read back from `out` (`sf`, or a SpatVector without 'sf'),
#'   ranked: `rank` (1 = most uncertain), `uncertainty`, `row`, `col`.
#' @examplesIf rsunet_available()
#' u <- terra::rast(nrows = 60, ncols = 80, xmin = 0, xmax = 800, ymin = 0, ymax = 600,
#'                  crs = "EPSG:32722")
#' set.seed(1)
#' terra::values(u) <- stats::runif(terra::ncell(u))
#' s <- suggest_labels(u, tempfile(fileext = ".gpkg"), n = 5, min_distance = 10,
#'                     shape = "box", size = 16)
#' s
#' @export
suggest_labels <- function(uncertainty, out, n, min_distance, shape = "point", size = NULL,
                           band = 1, max_candidates = 1e6, block_rows = NULL, overwrite = FALSE) {
  out <- path.expand(out)
  .py_call(do.call(.py_raw("labelling")$suggest_labels, c(
    list(.as_raster_path(uncertainty), out, min_distance = as.numeric(min_distance), shape = shape),
    .py_args(flags = "overwrite", ints = c("n", "size", "band", "max_candidates", "block_rows"))
  )))
  .vector_from_file(out)
}
