# The pixel Random Forest baseline from R: mirrors tests/test_baseline.py.

amazon <- list(`1` = "forest", `2` = "background")

baseline_patches <- function() {
  dir <- tempfile("baseline")
  root <- system.file("extdata", "amazon", package = "rsunet", mustWork = TRUE)
  images <- sort(list.files(file.path(root, "train", "images"), full.names = TRUE))[1:2]
  masks <- vapply(unname(images), function(img) {
    png <- file.path(root, "train", "masks", sub("\\.tif$", ".png", basename(img)))
    out <- file.path(dir, sub("\\.tif$", "_mask.tif", basename(img)))
    make_mask(img, png, out, classes = amazon)
    out
  }, character(1), USE.NAMES = FALSE)
  make_patches(images, masks, file.path(dir, "patches"), size = 128, progress = FALSE)
  split_patches(file.path(dir, "patches"), fractions = c(0.75, 0.25), block = 2, seed = 1)
  file.path(dir, "patches")
}

test_that("the forest maps a held-aside chip better than chance, as a georeferenced raster", {
  skip_if_no_rsunet()
  patches <- baseline_patches()
  rf <- train_baseline(patches, tempfile(fileext = ".joblib"), n_per_class = 1000,
                       n_trees = 20, seed = 0)
  expect_true(file.exists(rf))
  root <- system.file("extdata", "amazon", "test", package = "rsunet")
  image <- file.path(root, "images", "Amazon_511_35.tif")
  map <- predict_raster(rf, image, tempfile(fileext = ".tif"), window = 256, overlap = 32,
                        progress = FALSE)
  ref <- make_mask(image, file.path(root, "masks", "Amazon_511_35.png"),
                   tempfile(fileext = ".tif"), classes = amazon)
  expect_equal(as.vector(terra::ext(map)), as.vector(terra::ext(terra::rast(image))))
  agree <- mean(terra::values(map)[, 1] == terra::values(ref)[, 1], na.rm = TRUE)
  expect_gt(agree, 0.6)
  expect_true(all(terra::values(map)[, 1] %in% c(0, 1)))
})

test_that("an existing model is kept and a patch set without a split is a classed error", {
  skip_if_no_rsunet()
  patches <- baseline_patches()
  out <- tempfile(fileext = ".joblib")
  train_baseline(patches, out, n_per_class = 100, n_trees = 3)
  before <- tools::md5sum(out)
  expect_error(train_baseline(patches, out, n_per_class = 100, n_trees = 3),
               class = "rsunet_output_exists_error")
  expect_equal(tools::md5sum(out), before)
  idx <- read.csv(file.path(patches, "index.csv"))
  idx$split <- NULL
  write.csv(idx, file.path(patches, "index.csv"), row.names = FALSE)
  expect_error(train_baseline(patches, tempfile(fileext = ".joblib")), class = "rsunet_input_error")
})

test_that("a scene-normalised forest maps a scene whatever its gain and offset", {
  skip_if_no_rsunet()
  patches <- baseline_patches()
  rf <- train_baseline(patches, tempfile(fileext = ".joblib"), n_per_class = 400, n_trees = 10,
                       normalize = "scene", seed = 0)
  image <- system.file("extdata", "amazon", "test", "images", "Amazon_511_35.tif", package = "rsunet")
  changed <- rescaled_copy(image, tempfile(fileext = ".tif"))
  maps <- lapply(list(image, changed), function(x)
    predict_raster(rf, x, tempfile(fileext = ".tif"), window = 256, overlap = 32, progress = FALSE))
  expect_gt(mean(terra::values(maps[[1]]) == terra::values(maps[[2]])), 0.999)
  expect_error(train_baseline(patches, tempfile(fileext = ".joblib"), normalize = "raw"),
               class = "rsunet_input_error", regexp = "normalize")
})

test_that("a 'both' forest sees raw and scene-scaled values side by side", {
  skip_if_no_rsunet()
  path <- train_baseline(baseline_patches(), tempfile(fileext = ".joblib"), n_per_class = 300,
                         n_trees = 5, normalize = "both", seed = 0)
  rf <- reticulate::import("rsunet.baseline")$load_baseline(path)
  expect_equal(rf$bands, 3L)
  expect_equal(rf$forest$n_features_in_, 6L)
  expect_equal(rf$normalization$normalize, "both")
  image <- system.file("extdata", "amazon", "test", "images", "Amazon_511_35.tif", package = "rsunet")
  p <- predict_raster(path, image, tempfile(fileext = ".tif"), window = 512, overlap = 0,
                      output = "probabilities", progress = FALSE)
  # by hand: each pixel's bands, then the same scaled by the scene's 2-98 % percentiles
  v <- terra::values(terra::rast(image))
  q <- apply(v, 2, stats::quantile, probs = c(0.02, 0.98), names = FALSE)
  scaled <- sweep(sweep(v, 2, q[1, ]), 2, q[2, ] - q[1, ], "/")
  x <- array(cbind(v, scaled), c(1, nrow(v), 1, 6))
  want <- rf$predict_probabilities(reticulate::np_array(x, dtype = "float32"))[1, , 1, 2]
  # float32 (Python) and double (R) scaling may put a rare pixel on the other side of a split
  expect_gt(mean(abs(terra::values(p)[, 2] - want) < 1e-6), 0.999)
})

test_that("a 'scene_joint' forest sees all bands stretched together", {
  skip_if_no_rsunet()
  path <- train_baseline(baseline_patches(), tempfile(fileext = ".joblib"), n_per_class = 300,
                         n_trees = 5, normalize = "scene_joint", seed = 0)
  rf <- reticulate::import("rsunet.baseline")$load_baseline(path)
  expect_equal(rf$forest$n_features_in_, 3L)
  expect_equal(rf$normalization$normalize, "scene_joint")
  expect_true(rf$normalization$scene$joint)
  image <- system.file("extdata", "amazon", "test", "images", "Amazon_511_35.tif", package = "rsunet")
  p <- predict_raster(path, image, tempfile(fileext = ".tif"), window = 512, overlap = 0,
                      output = "probabilities", progress = FALSE)
  # by hand: each pixel's bands scaled by one range, the lowest 2 % to the highest 98 % percentile
  v <- terra::values(terra::rast(image))
  q <- apply(v, 2, stats::quantile, probs = c(0.02, 0.98), names = FALSE)
  x <- array((v - min(q[1, ])) / (max(q[2, ]) - min(q[1, ])), c(1, nrow(v), 1, 3))
  want <- rf$predict_probabilities(reticulate::np_array(x, dtype = "float32"))[1, , 1, 2]
  expect_gt(mean(abs(terra::values(p)[, 2] - want) < 1e-6), 0.999)
})
