# Patches from R: mirrors tests/test_patches.py on the same vectors (patches.json).
# Expected windows and counts were computed by numpy slicing; round trips compare with
# terra's own reading of the scene.

pv <- function() vectors("patches")
pimage <- function() file.path(vectors_dir(), pv()$image)
pmask <- function() file.path(vectors_dir(), pv()$mask)

make_case <- function(case, out) {
  keep <- if (is.list(case$keep)) unlist(case$keep) else case$keep
  make_patches(pimage(), pmask(), out, size = case$size, stride = case$stride, edge = case$edge,
               keep = keep, min_valid = case$min_valid, min_labelled = case$min_labelled,
               progress = FALSE)
}

test_that("windows and class counts match the shared vectors", {
  skip_if_no_rsunet()
  for (case in pv()$cases) {
    out <- tempfile()
    idx <- make_case(case, out)
    expect_s3_class(idx, "data.frame")
    expect_equal(nrow(idx), case$n_patches)
    offsets <- lapply(case$offsets, unlist)
    expect_equal(lapply(seq_len(nrow(idx)), function(i) c(idx$col_off[i], idx$row_off[i])),
                 lapply(offsets, as.numeric), ignore_attr = TRUE)
    totals <- lapply(c("0", "1", "2"), function(k) sum(idx[[paste0("n_", k)]]))
    expect_equal(stats::setNames(totals, c("0", "1", "2")), case$class_totals, ignore_attr = TRUE)
    expect_equal(utils::read.csv(file.path(out, "index.csv"))$patch_id, idx$patch_id)
  }
})

test_that("read_patch gives the scene's pixels at the recorded offset, with extent and CRS", {
  skip_if_no_rsunet()
  case <- Filter(function(c) c$edge == "shift", pv()$cases)[[1]]
  out <- tempfile()
  idx <- make_case(case, out)
  scene <- terra::rast(pimage())
  for (i in seq_len(nrow(idx))) {
    p <- read_patch(out, idx$patch_id[i])
    expect_s4_class(p$image, "SpatRaster")
    rows <- idx$row_off[i] + seq_len(idx$height[i])
    cols <- idx$col_off[i] + seq_len(idx$width[i])
    expected <- terra::as.array(scene)[rows, cols, , drop = FALSE]
    expect_equal(terra::as.array(p$image), expected, ignore_attr = TRUE)
    expect_equal(as.vector(terra::ext(p$image)),
                 c(xmin = idx$left[i], xmax = idx$right[i], ymin = idx$bottom[i], ymax = idx$top[i]),
                 tolerance = 1e-9)
    ecol <- terra::xFromCol(scene, cols[1]) - terra::res(scene)[1] / 2
    expect_equal(terra::xmin(p$image), ecol, tolerance = 1e-9)
    expect_equal(terra::crs(p$image, describe = TRUE)$code, "3857")
    m <- terra::as.array(p$mask)[, , 1]
    expect_equal(sum(m == 1, na.rm = TRUE), idx$n_1[i])
  }
})

test_that("real float32 scene round-trips through patches", {
  skip_if_no_rsunet()
  image <- shared_path("rstoolbox", "lsat.tif")
  scene <- terra::rast(image)
  mask <- terra::rast(scene, nlyrs = 1)
  terra::values(mask) <- 0
  mpath <- tempfile(fileext = ".tif")
  terra::writeRaster(mask, mpath, datatype = "INT1U")
  out <- tempfile()
  idx <- make_patches(terra::rast(image), mpath, out, size = 64, min_valid = 0, progress = FALSE)
  i <- nrow(idx)  # the shifted bottom-right patch
  expect_equal(idx$row_off[i] + 64, terra::nrow(scene))
  p <- read_patch(out, idx$patch_id[i])
  rows <- idx$row_off[i] + 1:64
  cols <- idx$col_off[i] + 1:64
  expect_equal(terra::as.array(p$image), terra::as.array(scene)[rows, cols, , drop = FALSE],
               ignore_attr = TRUE)
  expect_equal(terra::nlyr(p$image), 7)
})

test_that("bad sizes, grids and existing folders are classed errors", {
  skip_if_no_rsunet()
  out <- tempfile()
  expect_error(make_patches(pimage(), pmask(), out, size = 100), class = "rsunet_patch_size_error")
  expect_error(make_patches(pimage(), pimage(), out, size = 32, progress = FALSE),
               class = "rsunet_grid_mismatch_error")
  expect_false(dir.exists(out))
  make_patches(pimage(), pmask(), out, size = 32, progress = FALSE)
  expect_error(make_patches(pimage(), pmask(), out, size = 32, progress = FALSE),
               class = "rsunet_output_exists_error")
  idx <- make_patches(pimage(), pmask(), out, size = 64, overwrite = TRUE, progress = FALSE)
  expect_equal(unique(idx$width), 64)
})

test_that("block splits are reproducible, keep blocks whole, and show on the grid", {
  skip_if_no_rsunet()
  out <- tempfile()
  idx <- make_patches(pimage(), pmask(), out, size = 32, stride = 16, min_valid = 0, progress = FALSE)
  a <- split_patches(out, fractions = c(train = 0.6, validation = 0.2, test = 0.2), block = 2, seed = 7,
                     purge = FALSE)
  b <- split_patches(idx, fractions = c(0.6, 0.2, 0.2), block = 2, seed = 7, purge = FALSE)
  expect_equal(a$split, b$split)
  expect_true(all(tapply(a$split, a$block, function(s) length(unique(s))) == 1))
  expected_block <- paste(idx$scene, (idx$row_off + 16) %/% 64, (idx$col_off + 16) %/% 64, sep = ":")
  expect_equal(a$block, expected_block)
  expect_equal(utils::read.csv(file.path(out, "index.csv"))$split, a$split)
  g <- patch_grid(out, out = tempfile(fileext = ".gpkg"))
  expect_s4_class(g, "SpatVector")
  expect_equal(nrow(g), nrow(idx))
  expect_equal(g$split, a$split)
  cb <- class_balance(out)
  for (grp in unique(a$split)) {
    rows <- a[a$split == grp, ]
    got <- cb[cb$group == grp & cb$class_id == 1, ]
    expect_equal(got$pixels, sum(rows$n_1))
    expect_equal(got$n_patches, nrow(rows))
  }
  png <- tempfile(fileext = ".png")
  plot_patches(out, png, n = 3, split = "train")
  expect_identical(readBin(png, "raw", 4), as.raw(c(0x89, 0x50, 0x4e, 0x47)))
})

# brute force: which windows of a (rows: col_off, row_off, width, height) intersect which of b
shares_pixels <- function(a, b) {
  outer(a$col_off, b$col_off + b$width, "<") & t(outer(b$col_off, a$col_off + a$width, "<")) &
    outer(a$row_off, b$row_off + b$height, "<") & t(outer(b$row_off, a$row_off + a$height, "<"))
}

test_that("a purged block split leaves no pixel shared between splits", {
  skip_if_no_rsunet()
  out <- tempfile()
  idx <- make_patches(pimage(), pmask(), out, size = 32, stride = 16, min_valid = 0, progress = FALSE)
  plain <- split_patches(idx, fractions = c(0.6, 0.2, 0.2), block = 2, seed = 7, purge = FALSE)
  purged <- split_patches(out, fractions = c(0.6, 0.2, 0.2), block = 2, seed = 7)  # purges by default
  order <- c(train = 1, validation = 2, test = 3)
  rank <- order[purged$split]  # NA for "excluded"
  hits <- shares_pixels(purged, purged) & outer(purged$scene, purged$scene, "==")
  differ <- outer(rank, rank, "!=")
  expect_false(any(hits & differ, na.rm = TRUE))
  excluded <- purged$split == "excluded"
  expect_gt(sum(excluded), 0)
  expect_true(any(shares_pixels(plain, plain)[plain$split == "train", plain$split == "validation"]))
  expect_equal(purged$split[!excluded], plain$split[!excluded])
  # each excluded patch shares pixels with a kept patch of a later split
  was <- order[plain$split]
  later <- outer(was, rank, "<")
  expect_true(all(rowSums((hits & later)[excluded, , drop = FALSE], na.rm = TRUE) > 0))
  expect_equal(utils::read.csv(file.path(out, "index.csv"))$split, purged$split)
  expect_true(all(split_patches(idx, method = "random", seed = 1)$split %in% c("train", "validation")))
})

test_that("purging drops nothing without overlap", {
  skip_if_no_rsunet()
  idx <- make_patches(pimage(), pmask(), tempfile(), size = 32, stride = 32, edge = "pad", min_valid = 0,
                      progress = FALSE)
  plain <- split_patches(idx, fractions = c(0.6, 0.2, 0.2), block = 1, seed = 3, purge = FALSE)
  purged <- split_patches(idx, fractions = c(0.6, 0.2, 0.2), block = 1, seed = 3, purge = TRUE)
  expect_equal(purged$split, plain$split)
  expect_setequal(unique(purged$split), c("train", "validation", "test"))
})

test_that("each scene records its band percentiles over valid pixels (normalize = 'scene')", {
  skip_if_no_rsunet()
  out <- tempfile()
  make_case(pv()$cases[[1]], out)
  scene <- jsonlite::fromJSON(file.path(out, "patches.json"), simplifyVector = FALSE)$scenes[[1]]
  expect_equal(unlist(scene$percentiles$q), c(2, 98))
  got <- do.call(rbind, lapply(scene$percentiles$values, unlist))
  expect_equal(got, do.call(rbind, lapply(pv()$percentiles, unlist)), tolerance = 1e-12)
  # R's own quantiles (type 7, numpy's linear rule) of the pixels terra reads as valid
  v <- terra::values(terra::rast(pimage()))
  v <- v[stats::complete.cases(v), ]
  expect_equal(unname(t(apply(v, 2, stats::quantile, probs = c(0.02, 0.98)))), got, tolerance = 1e-9)
  # a patch set from before scene percentiles were recorded: a classed error, not a guess
  meta <- jsonlite::fromJSON(file.path(out, "patches.json"), simplifyVector = FALSE)
  meta$scenes <- lapply(meta$scenes, function(s) { s$percentiles <- NULL; s })
  writeLines(jsonlite::toJSON(meta, auto_unbox = TRUE, null = "null", digits = NA),
             file.path(out, "patches.json"))
  split_patches(out, fractions = c(0.5, 0.5), method = "random")
  expect_error(train_baseline(out, tempfile(fileext = ".joblib"), normalize = "scene"),
               class = "rsunet_input_error", regexp = "make_patches")
  expect_error(train_baseline(out, tempfile(fileext = ".joblib"), normalize = "both"),
               class = "rsunet_input_error", regexp = "make_patches")
})
