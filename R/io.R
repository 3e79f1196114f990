#' Read a window of a raster
#'
#' Reads every band (or the chosen ones) of a window in the file's native data type,
#' through the Python core, and returns it as a 'terra' SpatRaster with its extent,
#' CRS and nodata (as `NA`).
#'
#' @param path a raster file, or a SpatRaster (its source file is read).
#' @param window `NULL` for the whole raster, or `c(col_off, row_off, width, height)`
#'   in 0-based pixel offsets, as the patch index tables record them.
#' @param bands 1-based band numbers, all by default.
#' @param boundless if `TRUE` a window leaving the raster is padded with `NA`;
#'   otherwise it is an error of class `rsunet_raster_read_error`.
#' @return A SpatRaster held in memory. A pixel where any band is nodata (or masked,
#'   or outside the file) is `NA` in every band: one validity rule per pixel, as
#'   segmentation needs.
#' @examplesIf rsunet_available()
#' f <- example_data()$train$images[1]
#' r <- read_raster(f, window = c(10, 20, 64, 32))   # col_off, row_off, width, height
#' terra::plotRGB(r)
#' @export
read_raster <- function(path, window = NULL, bands = NULL, boundless = FALSE) {
  path <- .as_raster_path(path)
  r <- .py_call(.py("io")$read_raster(path, window = .as_window(window),
                                      bands = .as_int_list(bands), boundless = boundless))
  .rast_from_py(r)
}

#' Write a raster as a GeoTIFF, atomically
#'
#' Writes a tiled, compressed GeoTIFF with the raster's extent and CRS through the
#' Python core. The file appears under its name only when complete; an existing file
#' is kept unless `overwrite = TRUE` (error class `rsunet_output_exists_error`).
#'
#' @param x a SpatRaster.
#' @param path the GeoTIFF to write.
#' @param dtype data type to store, e.g. `"uint8"`, `"int16"`, `"uint16"`, `"float32"`;
#'   by default `"float32"` for non-integer values and `"int32"` for whole numbers.
#' @param nodata value written for `NA` cells (required for integer types if `x` has `NA`).
#' @param overwrite replace an existing file.
#' @return `path`, invisibly.
#' @examplesIf rsunet_available()
#' r <- terra::rast(nrows = 40, ncols = 60, vals = 1:2400, crs = "EPSG:32622")
#' write_raster(r, tempfile(fileext = ".tif"), dtype = "int16", nodata = -1)
#' @export
write_raster <- function(x, path, dtype = NULL, nodata = NULL, overwrite = FALSE) {
  if (!inherits(x, "SpatRaster")) .abort("x must be a terra SpatRaster", "rsunet_input_error")
  values <- terra::as.array(x)
  dtype <- if (is.null(dtype)) .default_dtype(values) else dtype
  if (anyNA(values)) {
    if (is.null(nodata)) {
      if (!grepl("^float", dtype)) {
        .abort("x has NA cells: give `nodata` for an integer dtype", "rsunet_input_error")
      }
      nodata <- NaN
    }
    values[is.na(values)] <- nodata
  }
  .py_call(.py("io")$write_raster(
    path.expand(path), .to_numpy_bands(values, dtype), transform = .transform_of(x),
    crs = .crs_of(x), nodata = nodata, overwrite = overwrite, band_names = as.list(names(x))
  ))
  invisible(path)
}

#' Describe a raster without reading its pixels
#'
#' @param path a raster file or a SpatRaster.
#' @return A list: width, height, count, dtypes, crs (WKT), epsg, transform, nodata,
#'   bounds (left, bottom, right, top).
#' @examplesIf rsunet_available()
#' raster_info(example_data()$train$images[1])
#' @export
raster_info <- function(path) {
  .py_call(.py("io")$raster_info(.as_raster_path(path)))
}

# ---- conversions shared by every stage -------------------------------------------

# A path Python can read: the file itself, or a SpatRaster's source, or a temporary
# GeoTIFF for an in-memory SpatRaster.
.as_raster_path <- function(x) {
  if (inherits(x, "SpatRaster")) {
    src <- terra::sources(x)
    if (length(src) == 1 && nzchar(src) && !any(terra::inMemory(x)) && file.exists(src) &&
        .same_as_file(x, src)) {
      return(normalizePath(src))
    }
    tmp <- tempfile(fileext = ".tif")
    terra::writeRaster(x, tmp, gdal = c("COMPRESS=DEFLATE"))
    return(tmp)
  }
  if (!is.character(x) || length(x) != 1) {
    .abort("expected a raster path or a terra SpatRaster", "rsunet_input_error")
  }
  if (!file.exists(x)) .abort(paste("raster not found:", x), c("rsunet_raster_read_error", "rsunet_input_error"))
  normalizePath(x)
}

# A file-backed SpatRaster can still differ from its file (terra::shift, a layer subset,
# a new CRS): only an unchanged one may be read from the file itself.
.same_as_file <- function(x, src) {
  f <- terra::rast(src)
  terra::nlyr(f) == terra::nlyr(x) && isTRUE(all.equal(as.vector(terra::ext(f)), as.vector(terra::ext(x)))) &&
    identical(terra::crs(f), terra::crs(x)) && all(terra::res(f) == terra::res(x))
}

.as_window <- function(window) {
  if (is.null(window)) return(NULL)
  if (length(window) != 4) .abort("window must be c(col_off, row_off, width, height)", "rsunet_input_error")
  as.list(as.integer(window))
}

.as_int_list <- function(x) if (is.null(x)) NULL else as.list(as.integer(x))

# Python Raster (bands, rows, cols) -> SpatRaster with extent, CRS and NA.
.rast_from_py <- function(r) {
  data <- .r(r$data)
  if (length(dim(data)) == 2) dim(data) <- c(1L, dim(data))
  valid <- .r(r$valid)
  hwc <- aperm(data, c(2, 3, 1))
  storage <- storage.mode(hwc)
  hwc[rep(!valid, dim(hwc)[3])] <- NA
  storage.mode(hwc) <- storage
  out <- terra::rast(hwc)
  b <- unlist(.r(r$bounds))
  terra::ext(out) <- terra::ext(b[1], b[3], b[2], b[4])
  crs <- r$crs
  if (!is.null(crs)) terra::crs(out) <- .r(crs$to_wkt())
  out
}

# R (rows, cols, bands) array -> NumPy (bands, rows, cols) of the given dtype.
.to_numpy_bands <- function(values, dtype) {
  np <- reticulate::import("numpy", convert = FALSE)
  a <- np$ascontiguousarray(np$transpose(reticulate::r_to_py(values), c(2L, 0L, 1L)))
  a$astype(dtype)
}

.default_dtype <- function(values) {
  v <- values[!is.na(values)]
  if (length(v) && all(v == round(v))) "int32" else "float32"
}

# terra extent + resolution -> affine coefficients (a, b, c, d, e, f).
.transform_of <- function(x) {
  e <- as.vector(terra::ext(x))
  r <- terra::res(x)
  list(r[1], 0, e[["xmin"]], 0, -r[2], e[["ymax"]])
}

.crs_of <- function(x) {
  wkt <- terra::crs(x)
  if (nzchar(wkt)) wkt else NULL
}
