# make_mask from R: mirrors tests/test_samples.py on the same vectors (samples.json).
# Expected masks: GDAL's (the shipped samples_expected.tif, and gdal_rasterize run here
# through system2 for the real files) and the label PNGs read by terra.

cases <- function() vectors("samples")$cases
counts_of <- function(r) {
  v <- terra::values(r, mat = FALSE)
  v[is.na(v)] <- 255
  tab <- table(v)
  stats::setNames(as.list(as.integer(tab)), names(tab))
}
mask_values <- function(r) {
  v <- terra::values(r, mat = FALSE)
  v[is.na(v)] <- 255
  v
}

gdal_reference <- function(image, labels, field, init) {
  if (!nzchar(Sys.which("gdal_rasterize")) || !nzchar(Sys.which("ogr2ogr"))) {
    skip_or_fail("GDAL command-line tools (gdal_rasterize, ogr2ogr) are not installed")
  }
  img <- terra::rast(image)
  e <- as.vector(terra::ext(img))
  tmp <- tempfile(fileext = ".gpkg")
  ref <- tempfile(fileext = ".tif")
  wkt <- tempfile(fileext = ".wkt")
  writeLines(terra::crs(img), wkt)
  system2("ogr2ogr", c("-f", "GPKG", "-t_srs", wkt, tmp, labels))
  burn <- if (is.null(field)) c("-burn", "1") else c("-a", field)
  system2("gdal_rasterize", c("-q", "-init", init, "-ot", "Byte", "-te",
                              sprintf("%.17g", e[c("xmin", "ymin", "xmax", "ymax")]),
                              "-ts", terra::ncol(img), terra::nrow(img), burn, tmp, ref))
  terra::values(terra::rast(ref), mat = FALSE)
}

test_that("synthetic polygons (sf, SpatVector, path) give GDAL's mask on the image grid", {
  skip_if_no_rsunet()
  case <- cases()[[1]]
  image <- file.path(vectors_dir(), case$image)
  labels <- file.path(vectors_dir(), case$labels)
  expected <- terra::values(terra::rast(file.path(vectors_dir(), case$expected)), mat = FALSE)
  inputs <- list(path = labels, spatvector = terra::vect(labels))
  if (requireNamespace("sf", quietly = TRUE)) inputs$sf <- sf::st_read(labels, quiet = TRUE)
  for (kind in names(inputs)) {
    out <- tempfile(fileext = ".tif")
    m <- make_mask(terra::rast(image), inputs[[kind]], out, field = case$field,
                   unlabelled = case$unlabelled)
    expect_equal(mask_values(m), expected, info = kind)
    expect_equal(counts_of(m), case$counts, info = kind)
    img <- terra::rast(image)
    expect_equal(as.vector(terra::ext(m)), as.vector(terra::ext(img)))
    expect_equal(dim(m)[1:2], dim(img)[1:2])
    expect_equal(terra::datatype(terra::rast(out)), "INT1U")
    cats <- terra::cats(m)[[1]]
    expect_equal(stats::setNames(as.list(cats$class), cats$id), case$classes_table)
  }
})

test_that("real polygons agree with gdal_rasterize and with the Python suite's counts", {
  skip_if_no_rsunet()
  for (case in Filter(function(c) !is.null(c$shared_image) && is.null(c[["classes"]]), cases())) {
    image <- do.call(shared_path, as.list(strsplit(case$shared_image, "/")[[1]]))
    labels <- do.call(shared_path, as.list(strsplit(case$shared_labels, "/")[[1]]))
    m <- make_mask(image, labels, tempfile(fileext = ".tif"), field = case$field,
                   unlabelled = case$unlabelled, name_field = case$name_field)
    init <- if (case$unlabelled == "background") 0 else 255
    expect_equal(mask_values(m), gdal_reference(image, labels, case$field, init), info = case$name)
    expect_equal(counts_of(m), case$counts, info = case$name)
  }
})

test_that("Amazon PNG masks become georeferenced masks, remapped to forest 1 / background 0", {
  skip_if_no_rsunet()
  for (case in Filter(function(c) !is.null(c[["classes"]]), cases())) {
    image <- do.call(shared_path, as.list(strsplit(case$shared_image, "/")[[1]]))
    png <- do.call(shared_path, as.list(strsplit(case$shared_labels, "/")[[1]]))
    m <- make_mask(image, png, tempfile(fileext = ".tif"), classes = unlist(case[["classes"]]))
    raw <- suppressWarnings(terra::values(terra::rast(png), mat = FALSE))
    expect_equal(mask_values(m), ifelse(raw == 1, 1, 0), info = case$name)
    expect_equal(counts_of(m), case$counts)
    img <- terra::rast(image)
    expect_equal(as.vector(terra::ext(m)), as.vector(terra::ext(img)))
    expect_equal(terra::crs(m), terra::crs(img))
    named <- make_mask(image, png, tempfile(fileext = ".tif"), classes = unlist(case[["classes"]]),
                       background = "non-forest")
    expect_equal(terra::levels(named)[[1]]$class, c("non-forest", "forest"))
    expect_equal(mask_values(named), mask_values(m))
    expect_error(make_mask(image, png, tempfile(fileext = ".tif"), background = ""),
                 class = "rsunet_input_error")
  }
})

test_that("mismatched PNGs, missing fields, far labels and existing outputs are classed errors", {
  skip_if_no_rsunet()
  image <- shared_path("amazon", "train", "images", "Amazon_181.tiff_34.tiff")
  png <- shared_path("amazon", "train", "masks", "Amazon_181.tiff_34.png")
  out <- tempfile(fileext = ".tif")
  expect_error(make_mask(image, png, out), class = "rsunet_grid_mismatch_error")
  expect_false(file.exists(out))
  case <- cases()[[1]]
  image <- file.path(vectors_dir(), case$image)
  labels <- file.path(vectors_dir(), case$labels)
  expect_error(make_mask(image, labels, out, field = "nope"), class = "rsunet_class_field_error")
  far <- terra::vect("POLYGON ((10 10, 10 11, 11 11, 10 10))", crs = "EPSG:4326")
  far$cls <- "x"
  expect_error(make_mask(image, far, out, field = "cls"), class = "rsunet_no_overlap_error")
  make_mask(image, labels, out, field = "cls")
  expect_error(make_mask(image, labels, out, field = "cls"), class = "rsunet_output_exists_error")
})
