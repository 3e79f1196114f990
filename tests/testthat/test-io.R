# Raster I/O from R: mirrors tests/test_io.py on the same vectors (io.json).

case_path <- function(case) {
  if (!is.null(case$shared)) return(do.call(shared_path, as.list(strsplit(case$shared, "/")[[1]])))
  file.path(vectors_dir(), case$file)
}

test_that("windows read through rsunet match the shared vectors and terra", {
  skip_if_no_rsunet()
  for (case in vectors("io")$cases) {
    path <- case_path(case)
    w <- unlist(case$window)
    r <- read_raster(path, window = w)
    expect_s4_class(r, "SpatRaster")
    expect_equal(c(terra::nlyr(r), terra::nrow(r), terra::ncol(r)), unlist(case$shape))
    v <- terra::values(r)
    valid <- stats::complete.cases(v)
    expect_equal(sum(valid), case$valid_count, info = case$file)
    expect_equal(unname(colSums(v[valid, , drop = FALSE])), unlist(case$band_sums),
                 tolerance = 1e-12, info = case$file)
    b <- unlist(case$bounds)
    expect_equal(as.vector(terra::ext(r)), c(xmin = b[1], xmax = b[3], ymin = b[2], ymax = b[4]),
                 tolerance = 1e-9)
    # terra's own reading of the same window agrees cell for cell
    full <- terra::rast(path)
    cells <- terra::cellFromRowColCombine(full, w[2] + seq_len(w[4]), w[1] + seq_len(w[3]))
    ref <- terra::extract(full, terra::xyFromCell(full, sort(cells)))
    expect_equal(unname(as.matrix(ref)), unname(v), info = case$file)
  }
})

test_that("the real Int16 edge window keeps EPSG:3857", {
  skip_if_no_rsunet()
  case <- Filter(function(c) !is.null(c$shared), vectors("io")$cases)[[1]]
  r <- read_raster(case_path(case), window = unlist(case$window))
  expect_equal(terra::crs(r, describe = TRUE)$code, "3857")
  info <- raster_info(case_path(case))
  expect_equal(info$dtypes[[1]], "int16")
  expect_equal(unlist(case$window)[1] + unlist(case$window)[3], info$width)
})

test_that("a window leaving the raster is a classed error unless boundless", {
  skip_if_no_rsunet()
  path <- file.path(vectors_dir(), "io_int16_4b.tif")
  expect_error(read_raster(path, window = c(50, 30, 10, 10)), class = "rsunet_raster_read_error")
  expect_error(read_raster(path, window = c(50, 30, 10, 10)), class = "rsunet_input_error")
  r <- read_raster(path, window = c(50, 30, 10, 10), boundless = TRUE)
  expect_true(all(is.na(terra::values(r)[, 1][rep(4:10, 1)])))
  expect_equal(dim(r), c(10, 10, 4))
  expect_error(read_raster(file.path(tempdir(), "nope.tif")), class = "rsunet_raster_read_error")
})

test_that("write_raster round-trips every dtype with CRS, extent and nodata", {
  skip_if_no_rsunet()
  for (dtype in c("uint8", "int16", "uint16", "float32")) {
    x <- terra::rast(nrows = 41, ncols = 67, nlyrs = 3, crs = "EPSG:32622",
                     extent = terra::ext(300000, 300033.5, 4999979.5, 5000000))
    set.seed(1)
    terra::values(x) <- sample(1:120, 41 * 67 * 3, replace = TRUE)
    x[6, 8] <- NA
    out <- tempfile(fileext = ".tif")
    write_raster(x, out, dtype = dtype, nodata = 0)
    back <- terra::rast(out)
    expect_equal(terra::datatype(back)[1], c(uint8 = "INT1U", int16 = "INT2S",
                                             uint16 = "INT2U", float32 = "FLT4S")[[dtype]])
    expect_equal(terra::values(back), terra::values(x), ignore_attr = TRUE)
    expect_equal(as.vector(terra::ext(back)), as.vector(terra::ext(x)))
    expect_equal(terra::crs(back, describe = TRUE)$code, "32622")
    expect_true(is.na(back[6, 8][1, 1]))
  }
})

test_that("write_raster never replaces a file unless asked", {
  skip_if_no_rsunet()
  x <- terra::rast(nrows = 5, ncols = 5, vals = 1, crs = "EPSG:32622", extent = terra::ext(0, 50, 0, 50))
  out <- tempfile(fileext = ".tif")
  write_raster(x, out, dtype = "uint8")
  x2 <- x * 0
  expect_error(write_raster(x2, out, dtype = "uint8"), class = "rsunet_output_exists_error")
  expect_equal(sum(terra::values(terra::rast(out))), 25)
  write_raster(x2, out, dtype = "uint8", overwrite = TRUE)
  expect_equal(sum(terra::values(terra::rast(out))), 0)
  expect_error(write_raster(matrix(1), out), class = "rsunet_input_error")
})

test_that("a changed file-backed SpatRaster is read as changed, not from its file", {
  skip_if_no_rsunet()
  f <- terra::rast(file.path(vectors_dir(), "io_int16_4b.tif"))
  shifted <- terra::shift(f, dx = 1000)
  r <- read_raster(shifted)
  expect_equal(terra::xmin(r), terra::xmin(f) + 1000)
  two <- read_raster(f[[2:3]])
  expect_equal(terra::nlyr(two), 2)
  expect_equal(terra::values(two), terra::values(f[[2:3]]), ignore_attr = TRUE)
})
