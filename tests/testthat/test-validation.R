# Mirrors tests/test_validation.py on the same vector (validation.json): four bundled chips,
# two folds, tiny models.

v <- vectors("validation")

cv_config <- function(dir) {
  root <- system.file("extdata", "amazon", package = "rsunet", mustWork = TRUE)
  image_of <- function(chip) {
    hit <- Sys.glob(file.path(root, "*", "images", paste0(chip, ".tif")))
    c(image = hit, mask = sub("\\.tif$", ".png", sub("/images/", "/masks/", hit)))
  }
  pairs <- lapply(unlist(v$chips), image_of)
  cfg <- v$config
  cfg$scenes <- list(train = list(images = vapply(pairs, `[[`, "", "image"),
                                  labels = vapply(pairs, `[[`, "", "mask")))
  path <- file.path(dir, "cv.json")
  writeLines(jsonlite::toJSON(cfg, auto_unbox = TRUE, pretty = TRUE), path)
  path
}

test_that("folds never share a scene; pooled and fold figures equal assess_map of the fold maps", {
  skip_if_no_rsunet()
  dir <- tempfile("cv-")
  dir.create(dir)
  cfg <- cv_config(dir)
  out <- file.path(dir, "cv")
  cv <- cross_validate(cfg, out, folds = v$folds, progress = FALSE)
  expect_s3_class(cv, "rsunet_cv")
  mapped <- character()
  for (k in seq_len(v$folds)) {
    index <- utils::read.csv(file.path(out, paste0("fold-", k), "index.csv"))
    trained <- unique(index$scene[index$split %in% c("train", "validation")])
    held <- unique(index$scene[index$split == "test"])
    expect_length(intersect(trained, held), 0)
    expect_true(length(trained) > 0 && length(held) > 0)
    for (model in c("unet", "random_forest")) {
      maps <- list.files(file.path(out, paste0("fold-", k), "maps", model), pattern = "\\.tif$")
      expect_setequal(sub("\\.tif$", "", maps), held)
    }
    mapped <- c(mapped, held)
  }
  expect_setequal(mapped, unlist(v$chips))
  expect_length(mapped, length(v$chips))

  for (model in c("unet", "random_forest")) {
    maps <- unlist(lapply(seq_len(v$folds), function(k) {
      list.files(file.path(out, paste0("fold-", k), "maps", model), pattern = "\\.tif$", full.names = TRUE)
    }))
    masks <- file.path(out, "masks", basename(maps))
    pooled <- assess_map(maps, masks)
    row <- cv$summary[cv$summary$model == model & cv$summary$metric == "macro_f1", ]
    expect_equal(row$pooled, pooled$overall[["macro_f1"]], tolerance = 1e-12)
    per_fold <- cv$scores[cv$scores$model == model & cv$scores$scene == "all", ]
    expect_equal(row$mean, mean(per_fold$macro_f1), tolerance = 1e-12)
    expect_equal(row$sd, stats::sd(per_fold$macro_f1), tolerance = 1e-12)
  }
  expect_output(print(cv), "macro F1")
  png_file <- file.path(dir, "cv.png")
  grDevices::png(png_file)
  plot(cv)
  expect_equal(graphics::par("mfrow"), c(1L, 1L))  # plot() leaves the user's layout alone
  grDevices::dev.off()
  expect_gt(file.size(png_file), 1000)
  # its right panel: each held-out scene once, both models, the scores' own figures
  by_scene <- rsunet:::.cv_by_scene(cv)
  expect_setequal(rownames(by_scene), unlist(v$chips))
  expect_setequal(colnames(by_scene), c("unet", "random_forest"))
  one <- cv$scores[cv$scores$scene == rownames(by_scene)[1] & cv$scores$model == "unet", ]
  expect_equal(by_scene[1, "unet"], one$macro_f1)
  expect_true(file.exists(file.path(out, "figures", "cross_validation.png")))

  # the same call continues (nothing retrained); other settings are refused with a class
  models <- list.files(file.path(out, "fold-1", "models"), full.names = TRUE)
  before <- file.mtime(models)
  again <- cross_validate(cfg, out, folds = v$folds, progress = FALSE)
  expect_equal(again$scores, cv$scores)
  expect_equal(file.mtime(models), before)
  expect_error(cross_validate(cfg, out, folds = 3, progress = FALSE), class = "rsunet_output_exists_error")
})

test_that("cross_validate gives classed errors before writing anything", {
  skip_if_no_rsunet()
  dir <- tempfile("cv-")
  dir.create(dir)
  cfg <- cv_config(dir)
  expect_error(cross_validate(cfg, file.path(dir, "a"), by = "pixel"), class = "rsunet_input_error")
  expect_error(cross_validate(cfg, file.path(dir, "b"), folds = 5), "5 folds need at least 5 scenes",
               class = "rsunet_input_error")
  expect_error(cross_validate(cfg, file.path(dir, "c"), folds = "two"), class = "rsunet_input_error")
  expect_false(any(file.exists(file.path(dir, c("a", "b", "c")))))
})

# the U-Net of a single-cover case, trained on the first chips of the published set
tiny_cover_unet <- function(case, dir) {
  patches <- amazon_patch_set(dir, n_images = case$n_images, size = 64)
  do.call(train_unet, c(list(patches, file.path(dir, "unet.keras"), progress = FALSE), case$train))
}

# the fraction of a window of a published chip that `model` maps as class `cls`
fraction_mapped_as <- function(model, chip, window, cls, dir) {
  image <- terra::rast(shared_path("amazon", "train", "images", paste0(chip, ".tiff")))
  w <- unlist(window)  # col_off, row_off, width, height (0-based)
  part <- image[(w[2] + 1):(w[2] + w[4]), (w[1] + 1):(w[1] + w[3]), drop = FALSE]
  scene <- file.path(dir, paste0(chip, ".tif"))
  terra::writeRaster(part, scene, datatype = "INT1U")
  map <- predict_raster(model, scene, file.path(dir, paste0(chip, "_map.tif")), window = 256,
                        overlap = 0, progress = FALSE)
  mean(terra::values(map, mat = FALSE) == cls)
}

test_that("a single-cover scene stays one class with the default normalisation", {
  skip_if_no_rsunet()
  case <- v$single_cover
  dir <- tempfile("cover-")
  dir.create(dir)
  model <- tiny_cover_unet(case, dir)
  expect_gte(fraction_mapped_as(model, case$chip, case$window, case$class, dir), case$min_fraction)
})

test_that("scene_joint keeps an all-forest window and an all-pasture chip one class", {
  skip_if_no_rsunet()
  case <- v$single_cover_joint
  dir <- tempfile("joint-")
  dir.create(dir)
  model <- tiny_cover_unet(case, dir)
  for (scene in case$scenes) {
    got <- fraction_mapped_as(model, scene$chip, scene$window, scene$class, dir)
    expect_gte(got, scene$min_fraction, label = scene$chip)
  }
})
