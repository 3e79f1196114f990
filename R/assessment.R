#' Assess a class map against a reference
#'
#' Streams one confusion matrix over the whole map (row blocks, so memory does not
#' grow with the map), or only inside given areas (`where`), or at `sample` random
#' pixels per area as the course did (4 random points per validation cell), and derives
#' overall accuracy, Cohen's kappa, per-class precision (user's accuracy), recall
#' (producer's accuracy), F1 and IoU, and the quantity and allocation disagreement of
#' Pontius & Millones (2011), whose sum is `1 - overall accuracy`. Pixels that are 255
#' (`ignore`) or nodata in either map count nowhere.
#'
#' @param prediction the class map: a single-band GeoTIFF path or a SpatRaster; or
#'   several (a character vector or a list), pooled into one confusion matrix, with
#'   `reference` then a vector or list of as many references, pair by pair.
#' @param reference the truth: a label raster (path or SpatRaster) on the map's grid, on
#'   another georeferenced grid (resampled by nearest neighbour; an error of class
#'   `rsunet_grid_mismatch_error` if it does not overlap the map), or a plain image of
#'   the map's size; or polygons (`sf`, `SpatVector` or a vector file; any CRS:
#'   reprojected, then burnt on the map's grid, a pixel belonging to the polygon that
#'   holds its centre).
#' @param field for polygons, the attribute holding the class: ids (numbers or numeric
#'   strings) or class names found in the map's class table; `NULL` burns every polygon
#'   as class 1.
#' @param where assess only inside these areas: polygons (`sf`, `SpatVector`, a vector
#'   file) or boxes as a data.frame (or CSV file) with columns `left`, `bottom`,
#'   `right`, `top` in the map's CRS, such as the validation rows of a patch index.
#' @param sample `NULL` to count every pixel, or a number of random pixels drawn among
#'   the valid pixels of each area of `where` (of the whole map without `where`).
#' @param seed seed of the random points.
#' @param classes optional class names, e.g. `c("0" = "forest", "1" = "water")`; by
#'   default those recorded in the map (or the reference), else `class_<id>`.
#' @param unlabelled for polygons: `"background"` (uncovered pixels are class 0) or
#'   `"ignore"` (they are not assessed).
#' @param ignore the value marking unknown pixels (255).
#' @param use_nodata also exclude the pixels the files mark as nodata. Set `FALSE` for
#'   label files that declare a real class as nodata (e.g. 0 for background).
#' @param block_rows rows read per block; `NULL` reads about 2^19 pixels per block,
#'   so memory stays flat whatever the map's size.
#' @param png optional path of a confusion-matrix figure (annotated counts, colours
#'   normalised per reference row).
#' @param csv optional path of the confusion matrix as CSV.
#' @param overwrite replace existing `png` / `csv` files (otherwise an error of class
#'   `rsunet_output_exists_error`).
#' @param design `"census"` (the default: every pixel, or `sample` pixels, counted as
#'   they are) or `"stratified"`: `reference` is then a stratified random sample of
#'   points (strata = map classes, e.g. from [sample_points()], labelled) with the
#'   reference class in column `field` (default `"reference"`), and the result is a
#'   list of class `rsunet_area_estimate` (below); `png` is then the area figure and
#'   `csv` its table; `where` and `sample` do not apply.
#' @param cluster assess many maps on a dask cluster, one task per map: `NULL` (here),
#'   `"local"`, `"local:N"` or a scheduler address, as in [predict_raster()]; the same
#'   confusion matrix. With `sample` the maps are assessed here, in order (one random
#'   generator for all scenes).
#' @return A list of class `rsunet_assessment`: `confusion` (an integer matrix, reference
#'   classes in rows, predicted classes in columns, with class names), `per_class` (a
#'   data.frame: `class_id`, `class`, `precision`, `recall`, `f1`, `iou`, `support`,
#'   `predicted`; `NaN` where a denominator is 0), `overall` (a named numeric vector:
#'   `n`, `overall_accuracy`, `kappa`, `quantity_disagreement`,
#'   `allocation_disagreement`, `macro_f1`, `mean_iou`), `class_ids`, and `per_scene` (a
#'   data.frame, one row per map: `scene`, its file name without extension, and that
#'   map's `overall` figures).
#'
#'   With `design = "stratified"`, the estimators of Olofsson et al. (2014): a list of
#'   class `rsunet_area_estimate` with `per_class` (a data.frame: `class_id`, `class`,
#'   `mapped_ha`, `weight`, `n`, `users_accuracy`, `users_se`, `users_ci`,
#'   `producers_accuracy`, `producers_se`, `producers_ci`, `area_proportion`,
#'   `area_ha`, `area_se_ha`, `area_ci_ha`; `*_ci` are half-widths of 95 % intervals,
#'   1.96 standard errors), `overall` (a list: `n`, `overall_accuracy`,
#'   `overall_accuracy_se`, `overall_accuracy_ci`, `total_area_ha`, `area_method`,
#'   geodesic in a geographic CRS), `error_matrix` (estimated area proportions,
#'   reference classes in rows, map classes in columns) and `confusion` (the sample
#'   counts, laid out alike).
#' @references Pontius, R. G. Jr. and Millones, M. (2011). Death to Kappa: birth of
#'   quantity disagreement and allocation disagreement for accuracy assessment.
#'   International Journal of Remote Sensing 32(15), 4407-4429.
#'
#'   Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder,
#'   M. A. (2014). Good practices for estimating area and assessing accuracy of land
#'   change. Remote Sensing of Environment 148, 42-57.
#' @template example-patches
#' @examplesIf rsunet_available()
#' # a quick model (the pixel Random Forest) maps a held-aside chip; its reference mask
#' rf <- train_baseline(patches, file.path(dir, "random_forest.joblib"), n_per_class = 500,
#'                      n_trees = 10)
#' map <- predict_raster(rf, ex$test$images[1], file.path(dir, "map.tif"), window = 256,
#'                       overlap = 32, progress = FALSE)
#' reference <- make_mask(ex$test$images[1], ex$test$masks[1], file.path(dir, "reference.tif"),
#'                        classes = c("1" = "forest", "2" = "background"))
#' a <- assess_map(map, reference, png = file.path(dir, "confusion.png"))
#' a$overall[c("overall_accuracy", "kappa")]
#' a$per_class
#' @export
assess_map <- function(prediction, reference, field = NULL, where = NULL, sample = NULL,
                       seed = 0, classes = NULL, unlabelled = "background", ignore = 255,
                       use_nodata = TRUE, block_rows = NULL, png = NULL, csv = NULL,
                       overwrite = FALSE, design = "census", cluster = NULL) {
  many <- (is.character(prediction) && length(prediction) > 1) ||
    (is.list(prediction) && !inherits(prediction, "SpatRaster"))
  if (many) {
    prediction <- unname(lapply(prediction, .as_raster_path))
    reference <- if (is.character(reference) || (is.list(reference) && !is.data.frame(reference))) {
      unname(lapply(reference, .as_labels_path))
    } else {
      .abort("several maps need a list (or vector) of as many references", "rsunet_input_error")
    }
  } else {
    prediction <- .as_raster_path(prediction)
    reference <- .as_labels_path(reference)
  }
  res <- .py_call(do.call(.py("assessment")$assess_map, c(
    list(prediction, reference, field = field, where = .as_where(where),
         classes = if (is.null(classes)) NULL else as.list(classes), unlabelled = unlabelled,
         design = design, cluster = .as_cluster(cluster)),
    .py_args(flags = c("use_nodata", "overwrite"), ints = c("sample", "seed", "ignore", "block_rows"),
             paths = c("png", "csv"))
  )))
  if (identical(design, "stratified")) return(.area_estimate_from_py(.r(res$as_dict())))
  .assessment_from_py(.r(res$as_dict()))
}

# where: sf / SpatVector / vector file -> a GeoPackage path; a data.frame of boxes -> CSV.
.as_where <- function(where) {
  if (is.null(where)) return(NULL)
  if (is.data.frame(where) && !inherits(where, "sf")) {
    missing <- setdiff(c("left", "bottom", "right", "top"), names(where))
    if (length(missing)) {
      .abort(paste0("where as a data.frame needs columns left, bottom, right, top (a patch index); missing ",
                    paste(missing, collapse = ", ")), "rsunet_input_error")
    }
    path <- tempfile(fileext = ".csv")
    utils::write.csv(where[c("left", "bottom", "right", "top")], path, row.names = FALSE)
    return(path)
  }
  .as_labels_path(where)
}

.assessment_from_py <- function(d) {
  names <- unlist(d$classes)
  confusion <- do.call(rbind, lapply(d$confusion, function(row) as.integer(unlist(row))))
  if (is.null(confusion)) confusion <- matrix(integer(0), 0, 0)
  dimnames(confusion) <- list(reference = names, predicted = names)
  col <- function(x, f = as.numeric) f(vapply(x, function(v) if (is.null(v)) NA_real_ else as.numeric(v), 0))
  pc <- d$per_class
  per_class <- data.frame(
    class_id = col(pc$class_id, as.integer), class = names,
    precision = col(pc$precision), recall = col(pc$recall), f1 = col(pc$f1), iou = col(pc$iou),
    support = col(pc$support), predicted = col(pc$predicted), stringsAsFactors = FALSE
  )
  overall <- vapply(d$overall, as.numeric, 0)
  per_scene <- as.data.frame(lapply(d$per_scene, function(x) {
    if (is.character(x[[1]])) unlist(x) else col(x)
  }), stringsAsFactors = FALSE)
  structure(list(confusion = confusion, per_class = per_class, overall = overall,
                 class_ids = as.integer(unlist(d$class_ids)), per_scene = per_scene),
            class = "rsunet_assessment")
}

#' @rdname assess_map
#' @param x an `rsunet_assessment`, as `assess_map()` returns.
#' @param ... ignored.
#' @export
print.rsunet_assessment <- function(x, ...) {
  o <- x$overall
  cat(sprintf("rsunet assessment of %s pixels: OA %.4f, kappa %.4f, quantity %.4f, allocation %.4f\n",
              format(o[["n"]], big.mark = ","), o[["overall_accuracy"]], o[["kappa"]],
              o[["quantity_disagreement"]], o[["allocation_disagreement"]]))
  cat("\nconfusion (rows reference, columns predicted):\n")
  print(x$confusion)
  cat("\n")
  print(x$per_class, digits = 4, row.names = FALSE)
  invisible(x)
}

#' Count connected objects of a class
#'
#' Labels the connected objects of one class (`scipy.ndimage.label`), drops those
#' smaller than `min_pixels`, and reports each object's size, area and centroid, and
#' the density of objects per hectare over the valid area of the map (the course's
#' "palm patches per hectare"). Areas come from the transform in a projected CRS; in a
#' geographic CRS each pixel row's area is its geodesic area on the CRS's ellipsoid.
#'
#' @param map the class map: a GeoTIFF path or a SpatRaster.
#' @param cls the class id whose objects are counted.
#' @param connectivity 4 (edge neighbours) or 8 (edge and corner neighbours).
#' @param min_pixels objects smaller than this many pixels are not counted.
#' @param ignore the unknown value (255), excluded from the valid area.
#' @param use_nodata also exclude the file's nodata pixels from the valid area.
#' @param keep_labels also return the object labels as a SpatRaster (attribute `labels`).
#' @return A data.frame, one row per object: `id`, `pixels`, `area_m2`, `area_ha`, `x`,
#'   `y` (centroid in the map's CRS), with attribute `summary`: a list with `class_id`,
#'   `count`, `connectivity`, `min_pixels`, `valid_area_ha`, `objects_per_ha`,
#'   `object_area_ha`, `mean_object_area_m2`, `area_method`.
#' @examplesIf rsunet_available()
#' ex <- example_data()
#' mask <- make_mask(ex$test$images[1], ex$test$masks[1], tempfile(fileext = ".tif"),
#'                   classes = c("1" = "forest", "2" = "background"))
#' # clearings (class 0) of at least 20 pixels
#' clearings <- count_objects(mask, cls = 0, min_pixels = 20)
#' attr(clearings, "summary")$objects_per_ha
#' @export
count_objects <- function(map, cls, connectivity = 8, min_pixels = 1, ignore = 255,
                          use_nodata = TRUE, keep_labels = FALSE) {
  path <- .as_raster_path(map)
  res <- .py_call(do.call(.py("assessment")$count_objects, c(list(path), .py_args(
    flags = c("use_nodata", "keep_labels"), ints = c("cls", "connectivity", "min_pixels", "ignore")
  ))))
  d <- .r(res$as_dict())  # plain lists: no pandas conversion through reticulate
  cols <- d$objects
  num <- function(x) as.numeric(unlist(x))
  objects <- data.frame(id = as.integer(num(cols$id)), pixels = num(cols$pixels),
                        area_m2 = num(cols$area_m2), area_ha = num(cols$area_ha),
                        x = num(cols$x), y = num(cols$y))
  attr(objects, "summary") <- d$summary
  if (isTRUE(keep_labels)) {
    labels <- terra::rast(terra::rast(path), nlyrs = 1)
    terra::values(labels) <- as.vector(t(.r(res$labels)))
    names(labels) <- "object"
    attr(objects, "labels") <- labels
  }
  objects
}

#' Turn a class map into polygons
#'
#' Traces each connected region of one class into a polygon (GDAL's polygonize through
#' `rasterio.features.shapes`) and writes them to a GeoPackage, with the class id and
#' name; unknown (255) and nodata pixels make no polygon. The file is written under a
#' temporary name and renamed when complete.
#'
#' @param map the class map: a GeoTIFF path or a SpatRaster.
#' @param out the GeoPackage to write.
#' @param classes optional class names, e.g. `c("0" = "forest", "1" = "water")`; by
#'   default those recorded in the map.
#' @param connectivity 4 or 8, how pixels join into one polygon.
#' @param ignore the unknown value (255).
#' @param use_nodata also leave out the file's nodata pixels.
#' @param overwrite replace an existing `out` (otherwise an error of class
#'   `rsunet_output_exists_error`).
#' @return The polygons read back from `out`: an `sf` object if the 'sf' package is
#'   installed, else a terra SpatVector; columns `class_id`, `class`, `area_m2` (square
#'   metres: planar in a projected CRS, geodesic on the ellipsoid in a geographic one).
#' @examplesIf rsunet_available()
#' ex <- example_data()
#' mask <- make_mask(ex$test$images[1], ex$test$masks[1], tempfile(fileext = ".tif"),
#'                   classes = c("1" = "forest", "2" = "background"))
#' p <- polygonize(mask, tempfile(fileext = ".gpkg"))
#' p
#' @export
polygonize <- function(map, out, classes = NULL, connectivity = 4, ignore = 255,
                       use_nodata = TRUE, overwrite = FALSE) {
  out <- path.expand(out)
  # the GeoDataFrame Python returns stays there (.py_raw); R reads the file
  .py_call(do.call(.py_raw("assessment")$polygonize, c(
    list(.as_raster_path(map), out, classes = if (is.null(classes)) NULL else as.list(classes)),
    .py_args(flags = c("use_nodata", "overwrite"), ints = c("connectivity", "ignore"))
  )))
  .vector_from_file(out)
}
