# rsunet's rpy2 bridge: the R side. Python (rsunet/r.py) evaluates this file once, when it
# starts embedded R, into an environment of its own; everything the bridge does in R is
# here, in one place, so an R user can read it. The file is package data of the Python
# package (pyproject.toml), and so also travels in the R package's inst/python.
local({
  e <- new.env()

  # reticulate calls this option's function just before it would start Python; in a
  # process that rpy2 runs, that start is what crashes later, so it must fail here.
  e$guard <- function(message) {
    options(reticulate.python.beforeInitialized = function() stop(message, call. = FALSE))
  }

  e$reticulate_started <- function() {
    "reticulate" %in% loadedNamespaces() &&
      isTRUE(tryCatch(reticulate:::is_python_initialized(), error = function(err) FALSE))
  }

  # .f(...) with an R error returned as list(ok = FALSE, value = message), so that R
  # prints nothing and Python raises a typed exception.
  e$try_call <- function(.f, ...) {
    tryCatch(list(ok = TRUE, value = .f(...)),
             error = function(err) list(ok = FALSE, value = conditionMessage(err),
                                        input = inherits(err, "rsunet_input_error")))
  }

  # an error the user's input caused (InputError in Python), not the user's R code
  e$input_error <- function(...) {
    stop(structure(class = c("rsunet_input_error", "error", "condition"),
                   list(message = paste0(...), call = NULL)))
  }

  e$make_rast <- function(values, dims, ext, crs, meta) {
    r <- terra::rast(nrows = dims[2], ncols = dims[3], nlyrs = dims[1],
                     xmin = ext[1], xmax = ext[2], ymin = ext[3], ymax = ext[4], crs = crs)
    terra::values(r) <- values  # layer after layer, row by row; NaN -> NA
    attr(r, "rsunet") <- meta
    r
  }

  e$as_spatraster <- function(x) {
    if (inherits(x, "PackedSpatRaster")) x <- terra::unwrap(x)
    ok <- tryCatch({ terra::nlyr(x); TRUE }, error = function(err) FALSE)
    if (!ok) e$input_error("this SpatRaster was saved without terra::wrap() (base::saveRDS ",
                           "keeps only a dead pointer): save it with terra::saveRDS() or ",
                           "saveRDS(terra::wrap(x), file)")
    x
  }

  e$rast_parts <- function(x) {
    x <- e$as_spatraster(x)
    v <- terra::values(x, mat = FALSE)  # layer after layer, row by row
    if (!is.double(v)) storage.mode(v) <- "double"
    list(values = v,
         dims = c(terra::nlyr(x), terra::nrow(x), terra::ncol(x)),
         ext = as.vector(terra::ext(x)), crs = terra::crs(x),
         meta = attr(x, "rsunet"), datatype = terra::datatype(x)[1])
  }

  e$make_df <- function(cols, names, n, dtypes) {
    for (i in seq_along(cols)) if (is.double(cols[[i]])) cols[[i]][is.nan(cols[[i]])] <- NA
    names(cols) <- names
    df <- structure(cols, class = "data.frame", row.names = c(NA_integer_, -as.integer(n)))
    attr(df, "rsunet_dtypes") <- dtypes
    df
  }

  e$make_factor <- function(codes, levels, ordered) {
    structure(codes, levels = levels, class = if (ordered) c("ordered", "factor") else "factor")
  }

  e$column_parts <- function(v) {
    if (is.factor(v)) return(list("factor", as.integer(v), levels(v), is.ordered(v)))
    if (inherits(v, "Date")) return(list("date", as.double(v), NULL, NULL))
    if (inherits(v, "POSIXct")) {
      tz <- attr(v, "tzone"); if (is.null(tz) || !nzchar(tz[1])) tz <- "UTC"
      return(list("posixct", as.double(v), tz[1], NULL))
    }
    if (is.logical(v)) return(list("logical", v, NULL, NULL))
    if (is.integer(v)) return(list("integer", v, NULL, NULL))
    if (is.double(v)) return(list("double", as.vector(v), NULL, NULL))
    if (is.character(v)) return(list("character", v, NULL, NULL))
    if (is.list(v)) return(list("list", v, NULL, NULL))
    stop("cannot convert a column of class ", class(v)[1], call. = FALSE)
  }

  e$df_parts <- function(df) {
    dtypes <- attr(df, "rsunet_dtypes")
    df <- as.data.frame(df, stringsAsFactors = FALSE)
    list(names = names(df), n = nrow(df), cols = lapply(df, e$column_parts),
         dtypes = dtypes)
  }

  e$make_sf <- function(df, wkb, geometry_name, position, crs) {
    g <- sf::st_as_sfc(structure(as.list(wkb), class = "WKB"), EWKB = TRUE,
                       crs = if (nzchar(crs)) sf::st_crs(crs) else sf::NA_crs_)
    dtypes <- attr(df, "rsunet_dtypes")
    df <- as.list(df)
    df <- append(df, list(g), after = position)
    names(df)[position + 1] <- geometry_name
    df <- sf::st_sf(structure(df, class = "data.frame", row.names = c(NA_integer_, -length(g))),
                    sf_column_name = geometry_name)
    attr(df, "rsunet_dtypes") <- dtypes
    attr(df, "rsunet_crs") <- crs
    df
  }

  e$sf_parts <- function(x) {
    if (inherits(x, c("SpatVector", "PackedSpatVector"))) {
      if (inherits(x, "PackedSpatVector")) x <- terra::vect(x)
      x <- sf::st_as_sf(x)
    }
    geometry_name <- attr(x, "sf_column")
    crs <- sf::st_crs(sf::st_geometry(x))
    attrs <- sf::st_drop_geometry(x)
    attr(attrs, "rsunet_dtypes") <- attr(x, "rsunet_dtypes")
    list(df = e$df_parts(attrs),
         wkb = sf::st_as_binary(sf::st_geometry(x), hex = TRUE, EWKB = TRUE),
         geometry_name = geometry_name,
         position = match(geometry_name, names(x)) - 1L,
         crs = if (is.na(crs)) "" else crs$wkt,
         recorded_crs = attr(x, "rsunet_crs"))
  }

  e$kind <- function(x) {
    if (is.null(x)) return("null")
    if (inherits(x, c("SpatRaster", "PackedSpatRaster"))) return("raster")
    if (inherits(x, c("sf", "SpatVector", "PackedSpatVector"))) return("vector")
    if (inherits(x, "sfc")) return("sfc")
    if (is.data.frame(x)) return("data.frame")
    if (is.factor(x)) return("factor")
    if (is.list(x)) return("list")
    if (is.atomic(x)) return("atomic")
    "other"
  }

  e$atomic_parts <- function(x) {
    list(values = as.vector(unclass(x)), dim = dim(x), names = names(x),
         type = typeof(x))
  }
  e
})
