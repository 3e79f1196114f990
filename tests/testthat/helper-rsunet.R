# Shared helpers for the R suite, mirroring tests/conftest.py.
# In CI (CI=true) a missing prerequisite fails the test instead of skipping it.

in_ci <- function() tolower(Sys.getenv("CI")) %in% c("1", "true", "yes")

skip_or_fail <- function(reason) {
  if (in_ci()) testthat::fail(paste(reason, "(CI=true: a missing prerequisite is a failure, not a skip)"))
  testthat::skip(reason)
}

# Skip unless Python with rsunet is bound and a non-square array survives the trip.
skip_if_no_rsunet <- function() {
  ok <- tryCatch({
    rsunet:::.py("io")
    rsunet:::.array_roundtrip_ok()
  }, error = function(e) conditionMessage(e))
  if (!isTRUE(ok)) {
    skip_or_fail(paste("the R-Python bridge is not usable:", if (is.character(ok)) ok else "array round trip failed"))
  }
  invisible(TRUE)
}

# The folder of the shared test vectors, as installed with the package.
vectors_dir <- function() system.file("extdata", "testvectors", package = "rsunet", mustWork = TRUE)

vectors <- function(stage) {
  jsonlite::fromJSON(file.path(vectors_dir(), paste0(stage, ".json")), simplifyVector = FALSE)
}

# A file under ../shared/data (RSUNET_SHARED_DATA), or skip (fail in CI) where absent.
shared_path <- function(...) {
  root <- Sys.getenv("RSUNET_SHARED_DATA", "../../../shared/data")
  path <- file.path(root, ...)
  if (!file.exists(path)) skip_or_fail(paste("real test data not found:", path))
  path
}

# A small split patch set from the Amazon training chips (1 = forest, 2 = non-forest -> 0),
# mirroring tests/amazon_patches.py.
amazon_patch_set <- function(folder, n_images = 2, size = 64, stride = size, seed = 0) {
  root <- shared_path("amazon", "train")
  dir.create(folder, showWarnings = FALSE, recursive = TRUE)
  images <- head(sort(list.files(file.path(root, "images"), pattern = "\\.tiff$", full.names = TRUE)), n_images)
  masks <- vapply(images, function(image) {
    png <- file.path(root, "masks", sub("\\.tiff$", ".png", basename(image)))
    out <- file.path(folder, sub("\\.tiff$", "_mask.tif", basename(image)))
    make_mask(image, png, out, classes = c("1" = "forest", "2" = "background"))
    out
  }, character(1), USE.NAMES = FALSE)
  patches <- file.path(folder, "patches")
  make_patches(images, masks, patches, size = size, stride = stride, progress = FALSE)
  split_patches(patches, fractions = c(0.75, 0.25), method = "random", seed = seed)
  patches
}

# A float32 copy of a 3-band scene, each band x * gain + offset (patches vectors),
# mirroring rescaled_copy() in tests/conftest.py.
rescaled_copy <- function(image, out) {
  rescale <- vectors("patches")$scene_rescale
  r <- terra::rast(image)
  layers <- lapply(seq_len(terra::nlyr(r)), function(i) r[[i]] * rescale$gain[[i]] + rescale$offset[[i]])
  terra::writeRaster(terra::rast(layers), out, datatype = "FLT4S", overwrite = TRUE)
  out
}
