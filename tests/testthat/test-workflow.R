# The main job from R: mirrors tests/test_workflow.py on the same tiny config (workflow.json).

tiny_config_file <- function() {
  cfg <- vectors("workflow")$tiny_config
  path <- tempfile(fileext = ".json")  # JSON is YAML: run_workflow reads it
  writeLines(jsonlite::toJSON(cfg, auto_unbox = TRUE, pretty = TRUE), path)
  path
}

test_that("run_workflow maps the held-aside chips with both models and summarises them", {
  skip_if_no_rsunet()
  out <- file.path(tempfile("wf"), "run")
  summary <- run_workflow(tiny_config_file(), out = out)
  expect_s3_class(summary, "data.frame")
  expect_equal(summary$model, c("unet", "random_forest"))
  expect_true(all(summary$overall_accuracy > 0 & summary$overall_accuracy <= 1))
  # the summary's numbers are those of the confusion matrix written beside it
  cm <- as.matrix(read.csv(file.path(out, "assessment", "confusion_unet.csv"), row.names = 1))
  oa <- sum(diag(cm)) / sum(cm)
  chance <- sum(rowSums(cm) * colSums(cm)) / sum(cm)^2
  expect_equal(summary$overall_accuracy[1], oa, tolerance = 1e-12)
  expect_equal(summary$kappa[1], (oa - chance) / (1 - chance), tolerance = 1e-12)
  test_images <- list.files(system.file("extdata", "amazon", "test", "images", package = "rsunet"),
                            full.names = TRUE)
  for (img in test_images) {
    map <- terra::rast(file.path(out, "maps", "unet", basename(img)))
    expect_equal(as.vector(terra::ext(map)), as.vector(terra::ext(terra::rast(img))))
    expect_true(all(terra::values(map)[, 1] %in% c(0, 1)))
    stem <- tools::file_path_sans_ext(basename(img))
    u <- terra::values(terra::rast(file.path(out, "maps", "unet", paste0(stem, "_uncertainty.tif"))))
    expect_true(all(u >= 0 & u <= 1, na.rm = TRUE))  # the shared config asks for margin
  }
  expect_true(file.exists(file.path(out, "figures", "maps.png")))
  expect_true(file.exists(file.path(out, "figures", "uncertainty.png")))
  per_scene <- utils::read.csv(file.path(out, "assessment", "per_scene.csv"))
  for (m in summary$model) {
    rows <- per_scene[per_scene$model == m, ]
    expect_equal(sum(rows$overall_accuracy * rows$pixels) / sum(rows$pixels),
                 summary$overall_accuracy[summary$model == m], tolerance = 1e-12)
  }
  # the compare_maps section: U-Net vs Random Forest on the same pixels as the summary
  cmp <- utils::read.csv(file.path(out, "assessment", "comparison.csv"))
  oa <- cmp[cmp$metric == "overall_accuracy", ]
  expect_equal(c(oa$unet, oa$random_forest), summary$overall_accuracy, tolerance = 1e-12)
  expect_true(oa$lower <= oa$difference && oa$difference <= oa$upper)
  expect_true(file.exists(file.path(out, "figures", "comparison.png")))
  # the cross_validate section: every chip held out once, the section's models only
  folds <- utils::read.csv(file.path(out, "cross_validation", "folds.csv"))
  chips <- list.files(system.file("extdata", "amazon", package = "rsunet"), pattern = "\\.tif$",
                      recursive = TRUE)
  expect_setequal(folds$scene, sub("\\.tif$", "", basename(chips)))
  expect_false(any(duplicated(folds$scene)))
  cv_summary <- utils::read.csv(file.path(out, "cross_validation", "summary.csv"))
  expect_equal(unique(cv_summary$model), "random_forest")
  expect_error(run_workflow(tiny_config_file(), out = out), class = "rsunet_output_exists_error")
})

test_that("the example configurations exist and bad configurations are classed errors", {
  skip_if_no_rsunet()
  expect_true(file.exists(example_config()))
  expect_true(any(grepl("^make_patches:", readLines(example_config(full = TRUE)))))
  bad <- tempfile(fileext = ".yaml")
  writeLines("make_patchez: {size: 128}", bad)
  expect_error(run_workflow(bad, out = tempfile()), class = "rsunet_input_error")
})
