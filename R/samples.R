#' Make a label mask on an image's grid
#'
#' Burns reference polygons (any CRS: reprojected to the image's; clipped to it) or
#' resamples a label raster into a single-band uint8 GeoTIFF with the image's exact
#' CRS, extent and size: background 0, classes 1..N, 255 for unknown pixels. Polygons
#' are burnt as `gdal_rasterize` does (a pixel belongs to a polygon when its centre
#' does; a later polygon wins where they overlap). The class names and the mapping of
#' raw label values to class ids are recorded in the file's tags (`RSUNET_CLASSES`,
#' `RSUNET_VALUE_MAP`).
#'
#' @param image the image: a raster file or a SpatRaster.
#' @param labels the labels: an `sf` or `SpatVector` layer, a vector file (GeoPackage,
#'   shapefile, GeoJSON, ...), or a label raster (file or SpatRaster): georeferenced on
#'   any grid (resampled by nearest neighbour), or a plain image (e.g. a PNG mask) of
#'   the image's size without georeferencing. A plain image of another size is an error
#'   of class `rsunet_grid_mismatch_error`.
#' @param out the mask GeoTIFF to write.
#' @param field the attribute holding each polygon's class (numbers, or strings such as
#'   `"1"` or `"forest"`); `NULL` burns every polygon as class 1.
#' @param classes optional mapping of raw label values to class ids or names, as a
#'   named vector or list, e.g. `c("1" = "forest", "2" = "background")` for the Amazon
#'   masks (1 = forest, 2 = non-forest). Names `"background"` (0) and `"ignore"` (255)
#'   are reserved; other names get ids 1, 2, ... in order. Without it, numbers are the
#'   class ids and other strings get ids 1..N in sorted order.
#' @param unlabelled `"background"` (pixels no label covers are class 0) or `"ignore"`
#'   (they are unknown, 255: for sparse training polygons).
#' @param name_field optional attribute with class names (e.g. `"class"` beside
#'   `"class_id"`), recorded in the class table.
#' @param background the name of class 0 in the class table (and every table and figure
#'   made from the mask), e.g. `"non-forest"`.
#' @param overwrite replace an existing `out` (otherwise error class
#'   `rsunet_output_exists_error`).
#' @return The mask as a SpatRaster read from `out`, with its class table as terra
#'   categories (`terra::cats()`); 255 (unknown) is `NA`. Labels that miss the image are
#'   an error of class `rsunet_no_overlap_error`; a missing field or an unmapped value,
#'   `rsunet_class_field_error`.
#' @examplesIf rsunet_available()
#' ex <- example_data()
#' # a label image (PNG, 1 = forest, 2 = non-forest) onto its scene's grid
#' m <- make_mask(ex$train$images[1], ex$train$masks[1], tempfile(fileext = ".tif"),
#'                classes = c("1" = "forest", "2" = "background"))
#' terra::plot(m)
#' @export
make_mask <- function(image, labels, out, field = NULL, classes = NULL,
                      unlabelled = "background", name_field = NULL, background = "background",
                      overwrite = FALSE) {
  res <- .py_call(do.call(.py("samples")$make_mask, c(
    list(.as_raster_path(image), .as_labels_path(labels)), .py_args(flags = "overwrite", paths = "out"),
    list(field = field, classes = if (is.null(classes)) NULL else as.list(classes),
         unlabelled = unlabelled, name_field = name_field, background = background)
  )))
  mask <- terra::rast(res$path)
  table <- unlist(res$classes)
  levels(mask) <- data.frame(id = as.integer(names(table)), class = unname(table))
  mask
}

# Labels as a path Python can read: sf and SpatVector go through a temporary GeoPackage.
.as_labels_path <- function(x) {
  if (inherits(x, "sf")) {
    if (!requireNamespace("sf", quietly = TRUE)) .abort("the 'sf' package is needed for sf labels", "rsunet_input_error")
    path <- tempfile(fileext = ".gpkg")
    sf::st_write(x, path, quiet = TRUE)
    return(path)
  }
  if (inherits(x, "SpatVector")) {
    path <- tempfile(fileext = ".gpkg")
    terra::writeVector(x, path, filetype = "GPKG", options = character(0))
    return(path)
  }
  if (inherits(x, "SpatRaster")) return(.as_raster_path(x))
  if (!is.character(x) || length(x) != 1) {
    .abort("labels must be a file path, an sf or SpatVector layer, or a SpatRaster", "rsunet_input_error")
  }
  if (!file.exists(x)) .abort(paste("labels not found:", x), "rsunet_input_error")
  normalizePath(x)
}
