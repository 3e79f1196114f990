# The rpy2 bridge seen from R: mirrors tests/test_r.py on the same bridge vectors.
# Python (rsunet.io.write_raster, geopandas, rsunet.r.save_rds) made the files; here R
# reads them with terra, sf and readRDS alone, as a colleague would. rpy2 never runs
# here (it must not share a process with reticulate < 1.31); the last test checks that
# Python started through reticulate refuses to start it.

bridge <- function() vectors("bridge")

as_num <- function(values) vapply(values, function(v) if (is.null(v)) NA_real_ else as.numeric(v), 0)

need_sf <- function() {
  if (!requireNamespace("sf", quietly = TRUE)) skip_or_fail("the R package sf is not installed")
}

terra_type <- c(uint8 = "INT1U", int16 = "INT2S", uint16 = "INT2U", float32 = "FLT4S")

test_that("terra reads every GeoTIFF rsunet writes with its values, extent, CRS and nodata", {
  cases <- bridge()$rasters
  expect_setequal(vapply(cases, function(c) c$dtype, ""), names(terra_type))
  for (case in cases) {
    x <- terra::rast(file.path(vectors_dir(), case$file))
    shape <- unlist(case$shape)
    expect_equal(c(terra::nlyr(x), terra::nrow(x), terra::ncol(x)), shape, info = case$file)
    expect_equal(terra::datatype(x)[1], unname(terra_type[case$dtype]), info = case$file)
    v <- terra::values(x)  # cells row by row, one column per band
    want <- sapply(case$values_row_major, as_num)
    expect_identical(unname(v + 0), unname(want), info = case$file)  # nodata -> NA
    ok <- stats::complete.cases(v)
    expect_equal(sum(ok), case$valid_count, info = case$file)
    expect_equal(unname(colSums(v[ok, , drop = FALSE])), unlist(case$band_sums),
                 tolerance = 1e-12, info = case$file)
    expect_equal(unname(as.vector(terra::ext(x))), unlist(case$extent), tolerance = 1e-13)
    expect_equal(terra::crs(x, describe = TRUE)$code, as.character(case$epsg))
  }
})

test_that("the same index means the same pixel: R [row, col, band] is NumPy [band, row, col] + 1", {
  case <- bridge()$rasters[[2]]  # int16, 3 x 5 x 7
  a <- terra::as.array(terra::rast(file.path(vectors_dir(), case$file)))
  expect_equal(dim(a), unlist(case$shape)[c(2, 3, 1)])
  ncol <- case$shape[[3]]
  for (rc in list(c(2, 6, 3), c(5, 1, 1), c(4, 7, 2))) {
    flat <- (rc[1] - 1) * ncol + rc[2]  # row-major position in the vector
    expect_equal(a[rc[1], rc[2], rc[3]], as_num(case$values_row_major[[rc[3]]])[flat])
  }
})

test_that("terra's own counts and band sums of io*.tif equal io.json", {
  cases <- Filter(function(c) is.null(c$shared), vectors("io")$cases)
  expect_gte(length(cases), 10)
  for (case in cases) {
    w <- unlist(case$window)
    a <- terra::as.array(terra::rast(file.path(vectors_dir(), case$file)))
    a <- a[w[2] + seq_len(w[4]), w[1] + seq_len(w[3]), , drop = FALSE]
    ok <- apply(!is.na(a), c(1, 2), all)
    expect_equal(sum(ok), case$valid_count, info = case$file)
    sums <- apply(a, 3, function(b) sum(b[ok]))
    expect_equal(unname(sums), unlist(case$band_sums), tolerance = 1e-12, info = case$file)
  }
})

test_that("R's table() of map vs reference is assessment.json's confusion matrix", {
  for (name in c("worked", "multi")) {
    case <- vectors("assessment")[[name]]
    g <- terra::values(terra::rast(file.path(vectors_dir(), case$reference)))[, 1]
    m <- terra::values(terra::rast(file.path(vectors_dir(), case$prediction)))[, 1]
    ok <- !is.na(g) & !is.na(m) & g != 255 & m != 255
    ids <- sort(unique(c(g[ok], m[ok])))
    tab <- unclass(table(factor(g[ok], ids), factor(m[ok], ids)))  # reference in rows
    want <- do.call(rbind, lapply(case$confusion, unlist))
    expect_equal(unname(tab[, , drop = TRUE]), want, info = name)
    if (!is.null(case$kappa)) {
      po <- sum(diag(tab)) / sum(tab)
      pe <- sum(rowSums(tab) * colSums(tab)) / sum(tab)^2
      expect_equal(po, case$overall_accuracy, tolerance = 1e-12)
      expect_equal((po - pe) / (1 - pe), case$kappa, tolerance = 1e-12)
    }
  }
})

test_that("sf reads the polygons geopandas wrote, bit for bit", {
  need_sf()
  case <- bridge()$polygons
  p <- sf::st_read(file.path(vectors_dir(), case$file), layer = case$layer, quiet = TRUE)
  expect_equal(sf::st_crs(p)$epsg, case$epsg)
  expect_identical(as.character(sf::st_as_binary(sf::st_geometry(p), hex = TRUE)),
                   tolower(unlist(case$wkb_hex)))
  expect_identical(p$class, vapply(case$attributes$class, function(v) if (is.null(v)) NA_character_ else v, ""))
  expect_equal(p$class_id, unlist(case$attributes$class_id))
  expect_identical(p$area, as_num(case$attributes$area))
  expect_identical(p$checked, unlist(case$attributes$checked))
})

test_that("the .rds files Python saved through the bridge read in plain R", {
  need_sf()
  rds <- bridge()$rds
  # a SpatRaster, wrapped: the same cells, extent and CRS as the GeoTIFF it came from
  x <- terra::unwrap(readRDS(file.path(vectors_dir(), rds$raster)))
  expect_s4_class(x, "SpatRaster")
  src <- terra::rast(file.path(vectors_dir(), rds$raster_source))
  expect_identical(unname(terra::values(x) + 0), unname(terra::values(src) + 0))
  expect_equal(as.vector(terra::ext(x)), as.vector(terra::ext(src)))
  expect_equal(terra::crs(x, describe = TRUE)$code, terra::crs(src, describe = TRUE)$code)
  # sf polygons: geometry identical to the GeoPackage's
  p <- readRDS(file.path(vectors_dir(), rds$polygons))
  expect_s3_class(p, "sf")
  expect_identical(as.character(sf::st_as_binary(sf::st_geometry(p), hex = TRUE)),
                   tolower(unlist(bridge()$polygons$wkb_hex)))
  expect_equal(sf::st_crs(p)$epsg, 32622)
  # a data.frame with R's own column types
  d <- readRDS(file.path(vectors_dir(), rds$table))
  expect_s3_class(d, "data.frame")
  expect_identical(vapply(d, function(v) class(v)[1], ""),
                   c(patch_id = "character", n = "integer", share = "numeric",
                     kept = "logical", split = "factor"))
  expect_identical(levels(d$split), c("train", "validation", "test"))
  expect_identical(d$n, as.integer(unlist(rds$table_columns$n)))
  expect_identical(d$share, as_num(rds$table_columns$share))
  expect_identical(as.character(d$split), unlist(rds$table_columns$split))
})

test_that(".rds files an R colleague saves keep what the Python side reads", {
  need_sf()
  dir <- tempfile("bridge-"); dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE))
  # polygons saved as sf: readRDS gives the same geometry and attributes back
  p <- sf::st_read(file.path(vectors_dir(), bridge()$polygons$file), quiet = TRUE)
  saveRDS(p, file.path(dir, "polygons.rds"))
  q <- readRDS(file.path(dir, "polygons.rds"))
  expect_identical(sf::st_as_binary(sf::st_geometry(q)), sf::st_as_binary(sf::st_geometry(p)))
  expect_identical(sf::st_drop_geometry(q), sf::st_drop_geometry(p))
  # a SpatRaster saved the terra way keeps its cells (what rsunet.r.read_rds unwraps) ...
  src <- terra::rast(file.path(vectors_dir(), "bridge_float32.tif"))
  terra::saveRDS(src, file.path(dir, "wrapped.rds"))
  back <- terra::unwrap(readRDS(file.path(dir, "wrapped.rds")))
  expect_identical(terra::values(back), terra::values(src))
  expect_equal(as.vector(terra::ext(back)), as.vector(terra::ext(src)))
  # ... while base::saveRDS keeps only a dead pointer: the case read_rds reports
  base::saveRDS(src, file.path(dir, "dead.rds"))
  expect_error(terra::nlyr(readRDS(file.path(dir, "dead.rds"))))
})

test_that("Python started by R (reticulate < 1.31) refuses to start R again through rpy2", {
  skip_if_no_rsunet()
  bridge <- rsunet:::.py_call(rsunet:::.py("r"))
  if (utils::packageVersion("reticulate") >= "1.31") {
    expect_true(reticulate::py_to_r(bridge$`_version_allows`(as.character(utils::packageVersion("reticulate")))))
    return(invisible())
  }
  # refused before rpy2 is imported: this R process must survive the attempt
  expect_error(rsunet:::.py_call(bridge$start_r()), class = "rsunet_dependency_error")
  expect_error(rsunet:::.py_call(bridge$start_r()), "reticulate 1\\.")
  expect_false(reticulate::py_eval("'rpy2.rinterface' in __import__('sys').modules"))
})
