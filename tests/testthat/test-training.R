# Training from R: mirrors tests/test_training.py (real Amazon patches, tiny U-Nets).

test_that("train_unet learns real patches and returns an rsunet_model with print and plot", {
  skip_if_no_rsunet()
  folder <- tempfile("train")
  patches <- amazon_patch_set(folder, n_images = 1)
  idx <- utils::read.csv(file.path(patches, "index.csv"))
  idx$split <- ifelse(seq_len(nrow(idx)) <= 8, "train", "validation")
  utils::write.csv(idx, file.path(patches, "index.csv"), row.names = FALSE)
  out <- file.path(folder, "unet.keras")
  m <- train_unet(patches, out, depth = 2, filters = 8, batch_size = 8, epochs = 25,
                  learning_rate = 0.01, patience = 100, augmentation = FALSE, progress = FALSE)
  expect_s3_class(m, "rsunet_model")
  h <- m$history
  expect_s3_class(h, "data.frame")
  expect_equal(h$epoch, 1:25)
  expect_lt(h$loss[25], 0.5 * h$loss[1])
  expect_gt(h$accuracy[25], 0.9)
  expect_true(all(c("val_loss", "val_f1", "val_iou", "val_accuracy") %in% names(h)))
  expect_equal(unname(m$classes), c("background", "forest"))
  expect_equal(m$bands, 3)
  expect_equal(m$multiple, 4)
  # normalisation: the training patches' band means, computed here with terra
  train_ids <- idx$patch_id[idx$split == "train"]
  px <- do.call(rbind, lapply(train_ids, function(id) terra::values(read_patch(patches, id)$image)))
  expect_equal(m$normalization$mean, unname(colMeans(px)), tolerance = 1e-5)
  expect_output(print(m), "best epoch")
  png <- tempfile(fileext = ".png")
  grDevices::png(png)
  plot(m)
  grDevices::dev.off()
  expect_gt(file.size(png), 1000)
  expect_true(file.exists(file.path(folder, "unet_history.png")))
  again <- load_model(out)
  expect_equal(again$history, m$history)
  expect_equal(reticulate::py_to_r(reticulate::r_to_py(again)), normalizePath(out))
  expect_error(train_unet(patches, out, epochs = 1, progress = FALSE), class = "rsunet_output_exists_error")
})

test_that("an interrupted streaming run resumes at the next epoch, as an uninterrupted in-memory one; errors are classed", {
  skip_if_no_rsunet()
  folder <- tempfile("resume")
  patches <- amazon_patch_set(folder, n_images = 1)
  keras <- reticulate::import("keras")
  stopper <- reticulate::py_run_string(paste(
    "import keras",
    "class Stop(keras.callbacks.Callback):",
    "    def on_epoch_end(self, epoch, logs=None):",
    "        if epoch == 1: raise KeyboardInterrupt",
    sep = "\n"), convert = FALSE)$Stop
  out <- file.path(folder, "r.keras")
  args <- list(patches = patches, out = out, depth = 2, filters = 4, batch_size = 8, epochs = 3,
               seed = 1, patience = 10, progress = FALSE, stream = TRUE)
  expect_error(do.call(train_unet, c(args, list(callbacks = list(stopper())))))
  expect_false(file.exists(out))
  first <- utils::read.csv(file.path(folder, "r_history.csv"))
  expect_equal(first$epoch, 1:2)
  expect_error(do.call(train_unet, modifyList(args, list(filters = 8))), class = "rsunet_input_error")
  m <- do.call(train_unet, args)
  expect_equal(m$history$epoch, 1:3)
  expect_equal(m$history[1:2, ], first, tolerance = 1e-12, ignore_attr = TRUE)
  # the same batches, augmentation and losses read from disk or held in memory, resumed or not
  whole <- do.call(train_unet, modifyList(args, list(out = file.path(folder, "w.keras"), stream = FALSE)))
  cols <- setdiff(names(whole$history), "seconds")
  expect_equal(m$history[cols], whole$history[cols], tolerance = 1e-5)
  bare <- file.path(folder, "bare")
  dir.create(bare)
  file.copy(file.path(patches, "patches.json"), bare)
  idx <- utils::read.csv(file.path(patches, "index.csv"))
  utils::write.csv(idx[setdiff(names(idx), "split")], file.path(bare, "index.csv"), row.names = FALSE)
  expect_error(train_unet(bare, file.path(folder, "b.keras"), progress = FALSE),
               class = "rsunet_input_error", regexp = "split_patches")
  expect_error(load_model(file.path(folder, "nope.keras")), class = "rsunet_model_format_error")
})

# a one-epoch U-Net on two Amazon chips, trained with `normalize`; its folder, patches and file
tiny_normalised_unet <- function(normalize) {
  folder <- tempfile(normalize)
  patches <- amazon_patch_set(folder, n_images = 2)
  out <- file.path(folder, paste0(normalize, ".keras"))
  m <- train_unet(patches, out, depth = 2, filters = 8, batch_size = 8, epochs = 1,
                  normalize = normalize, progress = FALSE)
  list(model = m, folder = folder, patches = patches, path = out)
}

test_that("a scene-normalised U-Net maps a scene whatever its gain and offset", {
  skip_if_no_rsunet()
  tiny <- tiny_normalised_unet("scene")
  m <- tiny$model
  folder <- tiny$folder
  patches <- tiny$patches
  expect_equal(m$normalization$scene$q, c(2, 98))
  expect_output(print(m), "scaled per scene")
  image <- system.file("extdata", "amazon", "test", "images", "Amazon_511_35.tif", package = "rsunet")
  changed <- rescaled_copy(image, file.path(folder, "changed.tif"))
  p <- lapply(list(image, changed), function(x)
    predict_raster(m, x, tempfile(fileext = ".tif"), window = 128, overlap = 32,
                   output = "probabilities", progress = FALSE))
  expect_lt(max(abs(terra::values(p[[1]]) - terra::values(p[[2]]))), 1e-3)
  expect_error(train_unet(patches, file.path(folder, "x.keras"), normalize = "patch", progress = FALSE),
               class = "rsunet_input_error", regexp = "normalize")
})

test_that("a 'both' U-Net takes raw and scene-scaled bands and predicts as computed by hand", {
  skip_if_no_rsunet()
  tiny <- tiny_normalised_unet("both")
  m <- tiny$model
  folder <- tiny$folder
  out <- tiny$path
  expect_equal(m$bands, 3)
  expect_equal(m$normalization$normalize, "both")
  expect_equal(m$normalization$scene$q, c(2, 98))
  expect_length(m$normalization$mean, 6)
  expect_output(print(m), "both raw .* scaled per scene")
  net <- reticulate::import("rsunet.training")$load_model(out)$keras_model
  expect_equal(net$input_shape[[4]], 6L)
  # the map: the network on the raw bands and the bands scaled by the scene's own 2-98 %
  # percentiles (R's quantiles, type 7 as numpy's), each standardised by the recorded mean/std
  image <- system.file("extdata", "amazon", "test", "images", "Amazon_511_35.tif", package = "rsunet")
  p <- predict_raster(m, image, file.path(folder, "map.tif"), window = 512, overlap = 0,
                      blend = "average", output = "probabilities", precision = "float32",
                      progress = FALSE)
  v <- terra::values(terra::rast(image))
  q <- apply(v, 2, stats::quantile, probs = c(0.02, 0.98), names = FALSE)
  scaled <- sweep(sweep(v, 2, q[1, ]), 2, q[2, ] - q[1, ], "/")
  z <- sweep(sweep(cbind(v, scaled), 2, m$normalization$mean), 2, m$normalization$std, "/")
  x <- array(0, c(1, 512, 512, 6))
  for (b in 1:6) x[1, , , b] <- matrix(z[, b], 512, 512, byrow = TRUE)
  p_forest <- net$predict_on_batch(reticulate::np_array(x, dtype = "float32"))[1, , , 1]
  expect_equal(matrix(terra::values(p)[, 2], 512, 512, byrow = TRUE), p_forest, tolerance = 1e-4)
})

test_that("a 'scene_joint' U-Net stretches all bands together and predicts as computed by hand", {
  skip_if_no_rsunet()
  tiny <- tiny_normalised_unet("scene_joint")
  m <- tiny$model
  expect_equal(m$normalization$normalize, "scene_joint")
  expect_equal(m$normalization$scene, list(q = c(2, 98), joint = TRUE))
  expect_length(m$normalization$mean, 3)
  expect_output(print(m), "all bands together")
  net <- reticulate::import("rsunet.training")$load_model(tiny$path)$keras_model
  # the map: the network on the bands scaled by one range, from the lowest band's 2 %
  # percentile to the highest band's 98 % (R's quantiles, type 7 as numpy's), standardised
  image <- system.file("extdata", "amazon", "test", "images", "Amazon_511_35.tif", package = "rsunet")
  p <- predict_raster(m, image, file.path(tiny$folder, "map.tif"), window = 512, overlap = 0,
                      blend = "average", output = "probabilities", precision = "float32",
                      progress = FALSE)
  v <- terra::values(terra::rast(image))
  q <- apply(v, 2, stats::quantile, probs = c(0.02, 0.98), names = FALSE)
  scaled <- (v - min(q[1, ])) / (max(q[2, ]) - min(q[1, ]))
  z <- sweep(sweep(scaled, 2, m$normalization$mean), 2, m$normalization$std, "/")
  x <- array(0, c(1, 512, 512, 3))
  for (b in 1:3) x[1, , , b] <- matrix(z[, b], 512, 512, byrow = TRUE)
  p_forest <- net$predict_on_batch(reticulate::np_array(x, dtype = "float32"))[1, , , 1]
  expect_equal(matrix(terra::values(p)[, 2], 512, 512, byrow = TRUE), p_forest, tolerance = 1e-4)
})

test_that("two patch sets train one model with balanced sampling; a rare class is drawn at its rate", {
  skip_if_no_rsunet()
  folder <- tempfile("two")
  a <- amazon_patch_set(file.path(folder, "a"), n_images = 1)
  b <- amazon_patch_set(file.path(folder, "b"), n_images = 1, seed = 1)
  m <- train_unet(c(a, b), file.path(folder, "two.keras"), depth = 2, filters = 4, batch_size = 8,
                  epochs = 1, sampling = "balanced", strategy = "default", class_weights = "auto",
                  loss = "weighted_ce", progress = FALSE)
  n_train <- sum(vapply(c(a, b), function(p) sum(utils::read.csv(file.path(p, "index.csv"))$split == "train"), 1))
  expect_equal(m$meta$n_train, n_train)
  expect_equal(m$meta$sampling, "balanced")
  expect_equal(m$meta$replicas, 1)
  expect_error(train_unet(a, file.path(folder, "x.keras"), sampling = "rare", progress = FALSE),
               class = "rsunet_input_error", regexp = "sampling")
  # the sampler (mirrors tests/test_training.py): class 1 in 20 of 1,000 patches; a draw picks a
  # class (1/2), then one of its patches, so 51 % of the draws are rare patches (2 % uniform);
  # 40,320 draws, within 4 binomial standard errors
  tr <- reticulate::import("rsunet.training")
  presence <- cbind(rep(TRUE, 1000), seq_len(1000) <= 20)
  weights <- tr$`_balanced_weights`(presence)
  order <- tr$`_epoch_batches`(1000L, 16L, 7L, 0L, 40L, 63L, weights)[[1]]
  expected <- 20 * 0.5 * (1 / 1000 + 1 / 20)
  expect_lt(abs(mean(order < 20) - expected), 4 * sqrt(expected * (1 - expected) / length(order)))
})
