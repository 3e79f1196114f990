# Prediction from R: mirrors tests/test_prediction.py on the same vectors (prediction.json).
# With a per-pixel model (a 1x1 convolution + softmax) any windowing, blending and
# test-time augmentation must equal the model applied to every pixel at once, which is
# computed here in R from the kernel: an independent route.

vec <- function() vectors("prediction")

# Expected probabilities (cells x classes) and class ids, by hand, from the kernel.
by_hand <- function(v) {
  vals <- terra::values(terra::rast(file.path(vectors_dir(), v$image)))
  kernel <- do.call(rbind, lapply(v$kernel, unlist))
  logits <- vals %*% kernel + matrix(unlist(v$bias), nrow(vals), ncol(kernel), byrow = TRUE)
  p <- exp(logits - apply(logits, 1, max))
  p <- p / rowSums(p)
  list(p = p, classes = max.col(p) - 1, valid = stats::complete.cases(vals))
}

test_that("every shared case equals the per-pixel model on the whole scene", {
  skip_if_no_rsunet()
  v <- vec()
  expected <- by_hand(v)
  image <- file.path(vectors_dir(), v$image)
  model <- file.path(vectors_dir(), v$model)
  for (case in v$cases) {
    info <- paste(unlist(case), collapse = "-")
    out <- tempfile(fileext = ".tif")
    r <- predict_raster(model, image, out, window = case$window, overlap = case$overlap,
                        blend = case$blend, tta = case$tta, output = "both", progress = FALSE)
    expect_s4_class(r, "SpatRaster")
    expect_equal(terra::nlyr(r), 1 + length(v$bias), info = info)
    got <- terra::values(r)
    valid <- expected$valid
    expect_equal(sum(valid), v$valid_count)
    expect_identical(unname(got[valid, 1]), as.numeric(expected$classes[valid]), info = info)
    expect_true(all(is.na(got[!valid, ])), info = info)
    expect_equal(unname(got[valid, -1]), unname(expected$p[valid, ]), tolerance = 1e-5,
                 info = info)
    counts <- vapply(seq_along(v$bias) - 1, function(k) sum(got[, 1] == k, na.rm = TRUE), 0)
    expect_equal(counts, unlist(v$class_counts), info = info)
    expect_equal(unname(colSums(got[, -1], na.rm = TRUE)), unlist(v$prob_sums),
                 tolerance = 1e-5, info = info)
  }
})

test_that("the class map keeps the image's CRS and extent, and 255 is NA", {
  skip_if_no_rsunet()
  v <- vec()
  image <- terra::rast(file.path(vectors_dir(), v$image))
  out <- tempfile(fileext = ".tif")
  r <- predict_raster(file.path(vectors_dir(), v$model), image, out, window = 16,
                      overlap = 4, progress = FALSE)
  expect_equal(terra::nlyr(r), 1)
  expect_equal(as.vector(terra::ext(r)), as.vector(terra::ext(image)))
  expect_equal(terra::crs(r), terra::crs(image))
  expect_equal(dim(r)[1:2], dim(image)[1:2])
  expect_equal(sum(is.na(terra::values(r))), sum(!by_hand(v)$valid))
  expect_true(file.exists(out))
  # an in-memory SpatRaster goes through a temporary file and gives the same map
  mem <- image * 1
  r2 <- predict_raster(file.path(vectors_dir(), v$model), mem, tempfile(fileext = ".tif"),
                       window = 16, overlap = 4, progress = FALSE)
  expect_equal(terra::values(r2), terra::values(r))
})

test_that("many scenes from a folder give one output path each", {
  skip_if_no_rsunet()
  v <- vec()
  folder <- file.path(tempdir(), "pred-scenes")
  dir.create(folder, showWarnings = FALSE)
  file.copy(file.path(vectors_dir(), v$image), file.path(folder, c("a.tif", "b.tif")),
            overwrite = TRUE)
  outdir <- file.path(tempdir(), "pred-maps")
  unlink(outdir, recursive = TRUE)
  paths <- predict_raster(file.path(vectors_dir(), v$model), folder, outdir, window = 32,
                          overlap = 8, progress = FALSE)
  expect_type(paths, "character")
  expect_equal(basename(paths), c("a.tif", "b.tif"))
  expect_equal(terra::values(terra::rast(paths[1])), terra::values(terra::rast(paths[2])))
  both <- predict_raster(file.path(vectors_dir(), v$model), list(file.path(folder, "a.tif")),
                         file.path(outdir, "both"), window = 32, overlap = 8,
                         output = "both", progress = FALSE)
  expect_s3_class(both, "data.frame")
  expect_true(all(file.exists(c(both$classes, both$probabilities))))
})

test_that("bad inputs are classed errors", {
  skip_if_no_rsunet()
  v <- vec()
  model <- file.path(vectors_dir(), v$model)
  two <- terra::rast(nrows = 20, ncols = 20, nlyrs = 2, vals = 1, crs = "EPSG:32622")
  expect_error(predict_raster(model, two, tempfile(fileext = ".tif"), progress = FALSE),
               class = "rsunet_band_mismatch_error")
  image <- file.path(vectors_dir(), v$image)
  expect_error(predict_raster(model, image, tempfile(fileext = ".tif"), window = 0),
               class = "rsunet_patch_size_error")
  expect_error(predict_raster(model, image, tempfile(fileext = ".tif"), window = 16,
                              overlap = 16), class = "rsunet_input_error")
  existing <- tempfile(fileext = ".tif")
  writeLines("mine", existing)
  expect_error(predict_raster(model, image, existing, progress = FALSE),
               class = "rsunet_output_exists_error")
  expect_equal(readLines(existing), "mine")
})

test_that("bfloat16 and auto (batch norm folded) maps keep the float32 labels on the bundled test chips", {
  skip_if_no_rsunet()
  case <- vectors("precision")$bfloat16
  model <- file.path(vectors_dir(), case$model)
  root <- system.file("extdata", "amazon", package = "rsunet", mustWork = TRUE)
  for (chip in unlist(case$chips)) {
    maps <- lapply(c(float32 = "float32", bfloat16 = "bfloat16", auto = "auto"), function(p)
      terra::values(predict_raster(model, file.path(root, chip), tempfile(fileext = ".tif"),
                                   window = case$window, overlap = case$overlap,
                                   precision = p, progress = FALSE))[, 1])
    expect_true(all(c(0, 1) %in% maps$float32))
    expect_gte(mean(maps$bfloat16 == maps$float32), case$min_agreement)
    expect_gte(mean(maps$auto == maps$float32), case$min_agreement)
  }
  # batch_size: "auto" (the default) or a whole number of windows
  one <- file.path(root, case$chips[[1]])
  auto <- predict_raster(model, one, tempfile(fileext = ".tif"), window = 256, overlap = 32,
                         batch_size = "auto", precision = "float32", progress = FALSE)
  two <- predict_raster(model, one, tempfile(fileext = ".tif"), window = 256, overlap = 32,
                        batch_size = 2, precision = "float32", progress = FALSE)
  expect_equal(terra::values(auto), terra::values(two))  # 2 x 256^2 = 2^17 pixels a call
  expect_error(predict_raster(model, one, tempfile(fileext = ".tif"), window = 256,
                              batch_size = "max", progress = FALSE), class = "rsunet_input_error")
  expect_error(predict_raster(model, file.path(root, case$chips[[1]]), tempfile(fileext = ".tif"),
                              window = 256, precision = "half", progress = FALSE),
               class = "rsunet_input_error")
})

test_that("uncertainty layers equal entropy and margin computed by hand", {
  skip_if_no_rsunet()
  v <- vec()
  h <- by_hand(v)
  p <- h$p[h$valid, , drop = FALSE]
  by_hand_u <- list(entropy = -rowSums(p * log(p)) / log(ncol(p)),
                    margin = apply(p, 1, function(x) { s <- sort(x, decreasing = TRUE); 1 - (s[1] - s[2]) }))
  case <- v$cases[[1]]
  image <- file.path(vectors_dir(), v$image)
  for (kind in names(by_hand_u)) {
    r <- predict_raster(file.path(vectors_dir(), v$model), image, tempfile(fileext = ".tif"),
                        window = case$window, overlap = case$overlap, blend = case$blend,
                        tta = isTRUE(case$tta), uncertainty = kind, progress = FALSE)
    expect_equal(names(r), c("class", paste0("uncertainty_", kind)))
    u <- terra::values(r[[2]])[, 1]
    expect_true(all(is.na(u[!h$valid])))
    expect_equal(u[h$valid], unname(by_hand_u[[kind]]), tolerance = 1e-5)
  }
  expect_error(predict_raster(file.path(vectors_dir(), v$model), image, tempfile(fileext = ".tif"),
                              window = 16, overlap = 4, uncertainty = "tta", progress = FALSE),
               class = "rsunet_input_error")
  expect_error(predict_raster(file.path(vectors_dir(), v$model), image, tempfile(fileext = ".tif"),
                              window = 16, overlap = 4, uncertainty = "mc_dropout", progress = FALSE),
               class = "rsunet_input_error", regexp = "no dropout layer")
  folder <- tempfile()
  both <- predict_raster(file.path(vectors_dir(), v$model), list(image), folder, window = 16,
                         overlap = 4, uncertainty = "margin", progress = FALSE)
  expect_equal(names(both), c("image", "classes", "uncertainty"))
  expect_true(all(file.exists(both$uncertainty)))
})
