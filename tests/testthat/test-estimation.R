# Stratified sampling, area-adjusted accuracy and map comparison from R: mirrors
# tests/test_estimation.py on the same vectors (estimation.json). Independent routes: the
# published worked example of Olofsson et al. (2014), the paper's equations written out in
# tools/make_test_vectors.py, the map's values read with terra, a hand-computed McNemar
# table, and a simulation whose true difference is known.

EV <- function() vectors("estimation")
efile <- function(name) file.path(vectors_dir(), name)
num <- function(x) as.numeric(unlist(x))

withr_tempdir <- function() {
  dir <- tempfile("rsunet-est-")
  dir.create(dir)
  dir
}

olofsson <- function(...) {
  o <- EV()$olofsson
  assess_map(efile(o$map), efile(o$points), design = "stratified", ...)
}

test_that("the Olofsson et al. (2014) worked example is reproduced to the printed precision", {
  skip_if_no_rsunet()
  o <- EV()$olofsson
  pub <- o$published
  r <- olofsson()
  expect_s3_class(r, "rsunet_area_estimate")
  pc <- r$per_class
  expect_equal(pc$class, unlist(o$classes))
  expect_equal(pc$mapped_ha, num(o$mapped_pixels) * o$pixel_ha)
  expect_equal(round(pc$area_ha), num(pub$area_ha))
  expect_equal(round(pc$area_ci_ha), num(pub$area_ci_ha))
  expect_equal(round(pc$users_accuracy, 2), num(pub$users_accuracy))
  expect_equal(round(pc$users_ci, 2), num(pub$users_ci))
  expect_equal(round(pc$producers_accuracy, 2), num(pub$producers_accuracy))
  expect_equal(round(r$overall$overall_accuracy, 2), pub$overall_accuracy)
  expect_equal(round(r$overall$overall_accuracy_ci, 2), pub$overall_accuracy_ci)
  expect_equal(r$overall$n, 640)
  expect_output(print(r), "stable non-forest")
})

test_that("the estimates equal the paper's equations written out, by id or by class name", {
  skip_if_no_rsunet()
  eq <- EV()$olofsson$equations
  for (r in list(olofsson(), olofsson(field = "reference_name"))) {
    for (k in c("users_accuracy", "users_se", "producers_accuracy", "producers_se", "area_ha", "area_se_ha")) {
      expect_equal(r$per_class[[k]], num(eq[[k]]), tolerance = 1e-10, info = k)
    }
    expect_equal(r$overall$overall_accuracy_se, eq$overall_accuracy_se, tolerance = 1e-10)
    expect_equal(unname(r$error_matrix), do.call(rbind, lapply(eq$error_matrix, num)), tolerance = 1e-10)
    expect_equal(sum(r$error_matrix), 1, tolerance = 1e-12)
  }
})

test_that("stratified assessment: sf points, figures and typed refusals", {
  skip_if_no_rsunet()
  skip_if_not_installed("sf")
  o <- EV()$olofsson
  pts <- sf::st_read(efile(o$points), quiet = TRUE)
  dir <- withr_tempdir()
  r <- assess_map(efile(o$map), pts, design = "stratified", png = file.path(dir, "area.png"))
  expect_true(file.size(file.path(dir, "area.png")) > 0)
  expect_equal(r$overall$n, 640)
  expect_error(assess_map(efile(o$map), efile(o$map), design = "stratified"), class = "rsunet_input_error")
  expect_error(olofsson(field = "label"), class = "rsunet_class_field_error")
  expect_error(assess_map(efile(o$map), pts[pts$map_class != 1, ], design = "stratified"),
               "no sample point", class = "rsunet_input_error")
  # unlabelled points are left out, with a warning
  pts$reference[1:10] <- NA
  expect_warning(fewer <- assess_map(efile(o$map), pts, design = "stratified"), "10 without a reference class",
                 class = "rsunet_warning")
  expect_equal(fewer$overall$n, 630)
})

test_that("geodesic class areas in a geographic CRS match an equal-area projection", {
  skip_if_no_rsunet()
  g <- EV()$geographic
  src <- reticulate::import("rasterio")$open(efile(g$map))
  on.exit(src$close())
  a <- rsunet:::.r(rsunet:::.py("estimation")$class_areas(src))
  expect_equal(a[[3]], "geodesic")
  expect_equal(as.numeric(a[[2]])[1:3] / 1e4, num(g$area_ha), tolerance = 1e-6)
})

test_that("sample_points hits the counts per stratum on valid pixels, seeded", {
  skip_if_no_rsunet()
  skip_if_not_installed("sf")
  s <- EV()$strata
  map <- terra::rast(efile(s$map))
  vals <- terra::as.matrix(map, wide = TRUE)
  dir <- withr_tempdir()
  cases <- list(list(n = s$proportional$n, allocation = "proportional", counts = s$proportional$counts),
                list(n = s$equal$n, allocation = "equal", counts = s$equal$counts),
                list(n = NULL, allocation = unlist(s$given$allocation), counts = s$given$counts))
  for (i in seq_along(cases)) {
    cs <- cases[[i]]
    p <- sample_points(efile(s$map), file.path(dir, paste0(i, ".gpkg")), n = cs$n,
                       allocation = cs$allocation, seed = 1, block_rows = 7)
    expect_s3_class(p, "sf")
    expect_equal(as.vector(table(factor(p$map_class, levels = 0:3))), num(cs$counts))
    expect_equal(vals[cbind(p$row + 1, p$col + 1)], p$map_class)       # valid, of its stratum
    xy <- terra::xyFromCell(map, terra::cellFromRowCol(map, p$row + 1, p$col + 1))
    expect_equal(unname(sf::st_coordinates(p)), unname(xy))            # pixel centres, inside
    expect_true(all(is.na(p$reference)))
  }
  a <- sample_points(map, file.path(dir, "a.gpkg"), n = 30, seed = 3)
  b <- sample_points(map, file.path(dir, "b.gpkg"), n = 30, seed = 3, block_rows = 5)
  expect_equal(a$row, b$row)
  # more than a class has: all of it, with a warning
  expect_warning(w <- sample_points(map, file.path(dir, "w.gpkg"), allocation = c("3" = 12)),
                 "fewer valid pixels", class = "rsunet_warning")
  expect_equal(nrow(w), 10)
  expect_error(sample_points(map, file.path(dir, "x.gpkg")), class = "rsunet_input_error")
  expect_error(sample_points(map, file.path(dir, "a.gpkg"), n = 5), class = "rsunet_output_exists_error")
  # the map as its own reference closes the loop: accuracy 1, areas as mapped
  sample_points(map, file.path(dir, "r.gpkg"), n = 40, allocation = "equal", reference = map)
  r <- assess_map(map, file.path(dir, "r.gpkg"), design = "stratified")
  expect_equal(r$overall$overall_accuracy, 1)
  expect_equal(r$per_class$area_ha, r$per_class$mapped_ha)
})

test_that("compare_maps: McNemar on the hand-computed table, accuracies as table() gives them", {
  skip_if_no_rsunet()
  m <- EV()$mcnemar
  dir <- withr_tempdir()
  cmp <- compare_maps(efile(m$a), efile(m$b), efile(m$reference), block = 8, thin = m$thin,
                      n_boot = 200, png = file.path(dir, "cmp.png"))
  expect_s3_class(cmp, "rsunet_comparison")
  for (k in c("both_right", "a_only", "b_only", "both_wrong")) expect_equal(cmp$mcnemar[[k]], m[[k]], info = k)
  expect_equal(cmp$mcnemar$statistic, m$statistic, tolerance = 1e-12)
  expect_equal(cmp$mcnemar$p_value, m$p_value, tolerance = 1e-9)
  ref <- terra::values(terra::rast(efile(m$reference)))
  for (which in c("a", "b")) {
    v <- terra::values(terra::rast(efile(m[[which]])))
    expect_equal(cmp$table[cmp$table$metric == "overall_accuracy", which], mean(v == ref), tolerance = 1e-12)
  }
  expect_true(all(cmp$table$lower <= cmp$table$difference & cmp$table$difference <= cmp$table$upper))
  expect_true(file.size(file.path(dir, "cmp.png")) > 0)
  expect_output(print(cmp), "McNemar")
  expect_error(compare_maps(efile(m$a), efile(EV()$strata$map), efile(m$reference)),
               class = "rsunet_grid_mismatch_error")
})

test_that("several scenes pool their blocks", {
  skip_if_no_rsunet()
  m <- EV()$mcnemar
  f <- vapply(c(m$a, m$b, m$reference), efile, "")
  one <- compare_maps(f[[1]], f[[2]], f[[3]], block = 8, thin = m$thin, n_boot = 50)
  two <- compare_maps(list(f[[1]], f[[1]]), list(f[[2]], f[[2]]), list(f[[3]], f[[3]]), block = 8,
                      thin = m$thin, n_boot = 50)
  expect_equal(two$table[c("a", "b", "difference")], one$table[c("a", "b", "difference")], tolerance = 1e-12)
  expect_equal(two$settings$n_blocks, 2 * one$settings$n_blocks)
  expect_equal(two$mcnemar$a_only, 2 * m$a_only)
  expect_error(compare_maps(list(f[[1]], f[[1]]), list(f[[2]]), list(f[[3]], f[[3]])),
               "three lists", class = "rsunet_input_error")
})

test_that("the block bootstrap covers the true difference at about the nominal rate", {
  # 30 simulated pairs (96 x 96 pixels, errors in 8 x 8 patches, expected OA 0.9 and 0.8):
  # the 95 % interval (24-pixel blocks) must cover the true 0.1 in at least 24 of 30
  # (measured 0.93 over 150 pairs in Python; P(X < 24) = 0.01 for Binomial(30, 0.93));
  # pixel-wise resampling (block = 1) must cover at most half of the time.
  skip_if_no_rsunet()
  dir <- withr_tempdir()
  set.seed(20261201)
  template <- terra::rast(nrows = 96, ncols = 96, xmin = 0, xmax = 960, ymin = 0, ymax = 960,
                          crs = "EPSG:32622")
  patchy <- function(truth, p) {
    wrong <- kronecker(matrix(stats::runif(144) < p, 12, 12), matrix(TRUE, 8, 8))
    ifelse(wrong, (truth + 1) %% 3, truth)
  }
  write <- function(m, name) {
    r <- terra::rast(template)
    terra::values(r) <- as.vector(t(m))
    terra::writeRaster(r, file.path(dir, name), datatype = "INT1U", overwrite = TRUE)
    file.path(dir, name)
  }
  covered <- c(block24 = 0, block1 = 0)
  for (i in 1:30) {
    truth <- matrix(sample(0:2, 96 * 96, replace = TRUE), 96, 96)
    ref <- write(truth, "ref.tif")
    a <- write(patchy(truth, 0.1), "a.tif")
    b <- write(patchy(truth, 0.2), "b.tif")
    for (block in c(24, 1)) {
      oa <- compare_maps(a, b, ref, block = block, n_boot = 300, seed = i)$table[1, ]
      key <- paste0("block", block)
      covered[[key]] <- covered[[key]] + (oa$lower <= 0.1 && 0.1 <= oa$upper)
    }
  }
  expect_gte(covered[["block24"]], 24)
  expect_lte(covered[["block1"]], 15)
})
