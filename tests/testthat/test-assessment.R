# Assessment from R: mirrors tests/test_assessment.py on the same vectors (assessment.json).
# Independent routes here: the hand-computed values in the vectors, base R table() of the
# two maps' values read with terra (and kappa/OA/P/R/F1/IoU by hand from that table),
# terra::resample, terra::rasterize, terra::patches and gdal_rasterize.

V <- function() vectors("assessment")
vfile <- function(name) file.path(vectors_dir(), name)

# terra reads nodata as NA: a pixel counts only where both maps hold a class.
table_of <- function(ref, pred, ids) {
  ok <- !is.na(ref) & !is.na(pred)
  unclass(table(factor(ref[ok], levels = ids), factor(pred[ok], levels = ids)))
}

# The figures by hand from a table (rows reference): Cohen's kappa, Pontius & Millones.
figures_of <- function(m) {
  p <- m / sum(m)
  rows <- rowSums(p); cols <- colSums(p); d <- diag(p)
  list(n = sum(m), overall_accuracy = sum(d),
       kappa = (sum(d) - sum(rows * cols)) / (1 - sum(rows * cols)),
       quantity_disagreement = sum(abs(rows - cols)) / 2,
       allocation_disagreement = sum(2 * pmin(rows - d, cols - d)) / 2,
       precision = diag(m) / colSums(m), recall = diag(m) / rowSums(m),
       f1 = 2 * diag(m) / (rowSums(m) + colSums(m)),
       iou = diag(m) / (rowSums(m) + colSums(m) - diag(m)))
}

expect_figures <- function(a, m, tol = 1e-12) {
  ex <- figures_of(m)
  expect_equal(unname(a$confusion), unname(m))
  for (k in c("n", "overall_accuracy", "kappa", "quantity_disagreement", "allocation_disagreement")) {
    expect_equal(a$overall[[k]], ex[[k]], tolerance = tol, info = k)
  }
  for (k in c("precision", "recall", "f1", "iou")) {
    expect_equal(a$per_class[[k]], unname(ex[[k]]), tolerance = tol, info = k)
  }
  expect_equal(a$overall[["quantity_disagreement"]] + a$overall[["allocation_disagreement"]],
               1 - a$overall[["overall_accuracy"]], tolerance = 1e-12)
}

# A copy of a 0/1 label raster with 5 % of pixels changed and 1 % unknown (255 = nodata).
perturbed_copy <- function(values, template, path, seed, classes = c(0, 1), flip = 0.05) {
  set.seed(seed)
  pred <- values
  change <- stats::runif(length(pred)) < flip
  pred[change] <- sample(classes, sum(change), replace = TRUE)
  pred[stats::runif(length(pred)) < 0.01] <- NA
  r <- terra::rast(template)
  terra::values(r) <- pred
  terra::writeRaster(r, path, datatype = "INT1U", NAflag = 255, overwrite = TRUE)
  pred
}

test_that("the worked example matches the hand-computed formulas and table()", {
  skip_if_no_rsunet()
  w <- V()$worked
  a <- assess_map(vfile(w$prediction), vfile(w$reference))
  expect_s3_class(a, "rsunet_assessment")
  cm <- do.call(rbind, lapply(w$confusion, unlist))
  expect_equal(unname(a$confusion), cm)
  expect_equal(rownames(a$confusion), unlist(w$classes))
  expect_equal(colnames(a$confusion), unlist(w$classes))
  for (k in c("overall_accuracy", "kappa", "quantity_disagreement", "allocation_disagreement")) {
    expect_equal(a$overall[[k]], w[[k]], tolerance = 1e-12, info = k)
  }
  for (k in c("precision", "recall", "f1", "iou")) {
    expect_equal(a$per_class[[k]], unlist(w[[k]]), tolerance = 1e-12, info = k)
  }
  ref <- terra::values(terra::rast(vfile(w$reference)), mat = FALSE)
  pred <- terra::values(terra::rast(vfile(w$prediction)), mat = FALSE)
  expect_figures(a, table_of(ref, pred, 0:2))
  expect_output(print(a), "kappa 0.6154")
})

test_that("the 4-class pair matches the vectors, table() and any block size", {
  skip_if_no_rsunet()
  m <- V()$multi
  a <- assess_map(vfile(m$prediction), vfile(m$reference))
  expected <- do.call(rbind, lapply(m$confusion, unlist))
  expect_equal(unname(a$confusion), expected)
  ref <- terra::values(terra::rast(vfile(m$reference)), mat = FALSE)
  pred <- terra::values(terra::rast(vfile(m$prediction)), mat = FALSE)
  expect_figures(a, table_of(ref, pred, 0:3))
  b <- assess_map(terra::rast(vfile(m$prediction)), terra::rast(vfile(m$reference)), block_rows = 7)
  expect_equal(b$confusion, a$confusion)
})

test_that("several scenes pool into one matrix", {
  skip_if_no_rsunet()
  m <- V()$multi; w <- V()$worked
  a <- assess_map(c(vfile(m$prediction), vfile(w$prediction)),
                  list(terra::rast(vfile(m$reference)), vfile(w$reference)))
  expected <- do.call(rbind, lapply(m$confusion, unlist))
  expected[1:3, 1:3] <- expected[1:3, 1:3] + do.call(rbind, lapply(w$confusion, unlist))
  expect_equal(unname(a$confusion), expected)
  expect_equal(rownames(a$confusion), c(unlist(w$classes), "class_3"))
  # each scene's own figures, from its own matrix
  expect_equal(a$per_scene$scene, tools::file_path_sans_ext(c(m$prediction, w$prediction)))
  for (i in 1:2) {
    cm <- do.call(rbind, lapply(list(m, w)[[i]]$confusion, unlist))
    expect_equal(a$per_scene$n[i], sum(cm))
    expect_equal(a$per_scene$overall_accuracy[i], sum(diag(cm)) / sum(cm), tolerance = 1e-12)
  }
  expect_error(assess_map(rep(vfile(m$prediction), 2), vfile(m$reference)), class = "rsunet_input_error")
})

test_that("real building labels against a perturbed copy agree with table()", {
  skip_if_no_rsunet()
  label <- shared_path("nrcan", "tiles_label_1.tif")
  lab <- terra::rast(label)
  truth <- terra::values(lab, mat = FALSE)     # the file declares 0 as nodata: NA here
  truth0 <- ifelse(is.na(truth), 0, truth)
  path <- tempfile(fileext = ".tif")
  pred <- perturbed_copy(truth0, lab, path, seed = 5)
  a <- assess_map(path, label, use_nodata = FALSE, block_rows = 100)
  expect_figures(a, table_of(truth0, pred, 0:1))
  b <- assess_map(path, label)               # nodata honoured: reference 0 counts nowhere
  expect_equal(unname(b$confusion), unname(table_of(truth, pred, 0:1)))
})

test_that("a reference on another grid is resampled by nearest neighbour as terra does", {
  skip_if_no_rsunet()
  lab <- terra::rast(shared_path("nrcan", "tiles_label_2.tif"))
  fine <- terra::values(lab, mat = FALSE)
  fine[is.na(fine)] <- 2                       # recode the file's nodata (0) as a class
  f <- terra::rast(lab); terra::values(f) <- fine
  coarse <- terra::aggregate(f, 2, fun = "modal")
  cpath <- tempfile(fileext = ".tif")
  terra::writeRaster(coarse, cpath, datatype = "INT1U", overwrite = TRUE)
  ppath <- tempfile(fileext = ".tif")
  pred <- perturbed_copy(fine, lab, ppath, seed = 9, classes = c(1, 2))
  a <- assess_map(ppath, cpath, use_nodata = FALSE)
  expected_ref <- terra::values(terra::resample(terra::rast(cpath), lab, method = "near"), mat = FALSE)
  expect_figures(a, table_of(expected_ref, pred, 1:2))
})

test_that("polygon references agree with gdal_rasterize (multi-class NB land cover)", {
  skip_if_no_rsunet()
  image <- shared_path("nrcan", "nb_23322E759967N_2of2_rgb.tif")
  polys <- shared_path("nrcan", "nb_BakerLake_2017_landcover.gpkg")
  if (!nzchar(Sys.which("gdal_rasterize"))) skip_or_fail("gdal_rasterize is not installed")
  img <- terra::rast(image)
  e <- as.vector(terra::ext(img))
  gdal <- tempfile(fileext = ".tif")
  system2("gdal_rasterize", c("-q", "-init", "0", "-ot", "Byte", "-a", "Quatreclasses", "-te",
                              sprintf("%.17g", e[c("xmin", "ymin", "xmax", "ymax")]),
                              "-ts", terra::ncol(img), terra::nrow(img), polys, gdal))
  truth <- terra::values(terra::rast(gdal), mat = FALSE)
  ppath <- tempfile(fileext = ".tif")
  pred <- perturbed_copy(truth, terra::rast(gdal), ppath, seed = 3, classes = 0:4, flip = 0.1)
  truth[truth == 255] <- NA
  inputs <- list(path = polys, spatvector = terra::vect(polys))
  if (requireNamespace("sf", quietly = TRUE)) inputs$sf <- sf::st_read(polys, quiet = TRUE)
  for (kind in names(inputs)) {
    a <- assess_map(ppath, inputs[[kind]], field = "Quatreclasses", use_nodata = FALSE)
    expect_equal(a$class_ids, 0:4, info = kind)
    expect_figures(a, table_of(truth, pred, 0:4))
  }
  expect_error(assess_map(ppath, polys, field = "nope"), class = "rsunet_class_field_error")
})

test_that("a reference off the map is a grid mismatch error", {
  skip_if_no_rsunet()
  m <- V()$multi
  far <- tempfile(fileext = ".tif")
  terra::writeRaster(terra::shift(terra::rast(vfile(m$reference)), dx = 1e6), far, datatype = "INT1U")
  expect_error(assess_map(vfile(m$prediction), far), class = "rsunet_grid_mismatch_error")
  expect_error(assess_map(vfile(m$prediction), far), "does not overlap")
})

test_that("where: boxes as a data.frame or polygons give the counts inside them", {
  skip_if_no_rsunet()
  m <- V()$multi
  boxes <- do.call(rbind, lapply(m$boxes, as.data.frame))
  boxes$split <- "validation"
  expected <- do.call(rbind, lapply(m$confusion_in_boxes, unlist))
  a <- assess_map(vfile(m$prediction), vfile(m$reference), where = boxes)
  expect_equal(unname(a$confusion), expected)
  v <- do.call(rbind, lapply(seq_len(nrow(boxes)), function(i) {
    terra::as.polygons(terra::ext(boxes$left[i], boxes$right[i], boxes$bottom[i], boxes$top[i]),
                       crs = "EPSG:32622")
  }))
  b <- assess_map(vfile(m$prediction), vfile(m$reference), where = v)
  expect_equal(unname(b$confusion), expected)
  # and by hand: table() of the pixels whose centres lie in the boxes
  r <- terra::rast(vfile(m$reference))
  xy <- terra::xyFromCell(r, seq_len(terra::ncell(r)))
  inside <- Reduce(`|`, lapply(seq_len(nrow(boxes)), function(i) {
    xy[, 1] > boxes$left[i] & xy[, 1] < boxes$right[i] & xy[, 2] > boxes$bottom[i] & xy[, 2] < boxes$top[i]
  }))
  ref <- terra::values(r, mat = FALSE); ref[!inside] <- NA
  pred <- terra::values(terra::rast(vfile(m$prediction)), mat = FALSE)
  expect_equal(unname(a$confusion), unname(table_of(ref, pred, 0:3)))
  off <- data.frame(left = 0, bottom = 0, right = 10, top = 10)
  expect_error(assess_map(vfile(m$prediction), vfile(m$reference), where = off),
               class = "rsunet_no_overlap_error")
  expect_error(assess_map(vfile(m$prediction), vfile(m$reference), where = data.frame(x = 1)),
               class = "rsunet_input_error")
})

test_that("sample: n seeded points per area, drawn from the areas", {
  skip_if_no_rsunet()
  m <- V()$multi
  boxes <- do.call(rbind, lapply(m$boxes, as.data.frame))
  inside <- do.call(rbind, lapply(m$confusion_in_boxes, unlist))
  a <- assess_map(vfile(m$prediction), vfile(m$reference), where = boxes, sample = 4, seed = 1)
  b <- assess_map(vfile(m$prediction), vfile(m$reference), where = boxes, sample = 4, seed = 1,
                  block_rows = 5)
  expect_equal(a$confusion, b$confusion)
  expect_equal(a$overall[["n"]], 4 * nrow(boxes))
  ids <- a$class_ids + 1
  expect_true(all(a$confusion <= inside[ids, ids]))
  all_of_them <- assess_map(vfile(m$prediction), vfile(m$reference), where = boxes, sample = 10000)
  expect_equal(unname(all_of_them$confusion), inside)
  expect_equal(assess_map(vfile(m$prediction), vfile(m$reference), sample = 50)$overall[["n"]], 50)
  expect_error(assess_map(vfile(m$prediction), vfile(m$reference), sample = 0), class = "rsunet_input_error")
})

test_that("PNG and CSV are written, and never overwritten unless asked", {
  skip_if_no_rsunet()
  w <- V()$worked
  png <- tempfile(fileext = ".png"); csv <- tempfile(fileext = ".csv")
  a <- assess_map(vfile(w$prediction), vfile(w$reference), png = png, csv = csv)
  back <- utils::read.csv(csv, row.names = 1, check.names = FALSE)
  expect_equal(unname(as.matrix(back)), unname(a$confusion))
  expect_equal(rownames(back), unlist(w$classes))
  expect_true(file.size(png) > 5000)
  expect_equal(readBin(png, "raw", 4), as.raw(c(0x89, 0x50, 0x4e, 0x47)))
  expect_error(assess_map(vfile(w$prediction), vfile(w$reference), csv = csv),
               class = "rsunet_output_exists_error")
  expect_silent(assess_map(vfile(w$prediction), vfile(w$reference), csv = csv, overwrite = TRUE))
})

test_that("objects on the hand-made map match the vectors", {
  skip_if_no_rsunet()
  o <- V()$objects
  for (case in o$cases) {
    res <- count_objects(vfile(o$map), case$cls, connectivity = case$connectivity,
                         min_pixels = case$min_pixels)
    info <- paste(case$cls, case$connectivity, case$min_pixels)
    expect_equal(sort(res$pixels), unlist(case$pixels), info = info)
    expect_equal(res$area_m2, res$pixels * o$pixel_area_m2, info = info)
    expect_equal(res$area_ha, res$area_m2 / 1e4)
    s <- attr(res, "summary")
    expect_equal(s$count, length(case$pixels))
    expect_equal(s$valid_area_ha, o$valid_area_ha, tolerance = 1e-12)
    expect_equal(s$objects_per_ha, length(case$pixels) / o$valid_area_ha, tolerance = 1e-12)
  }
  res <- count_objects(vfile(o$map), 1, keep_labels = TRUE)
  sq <- res[res$pixels == 9, ]
  expect_equal(c(sq$x, sq$y), unlist(o$square_centroid), tolerance = 1e-12)
  labels <- attr(res, "labels")
  expect_s4_class(labels, "SpatRaster")
  tab <- table(terra::values(labels, mat = FALSE))
  expect_equal(as.numeric(tab[as.character(res$id)]), res$pixels)
  # terra::patches on the same map, an independent count
  cls1 <- terra::classify(terra::rast(vfile(o$map)), cbind(c(0, 2), NA))
  for (d in c(4, 8)) {
    p <- terra::patches(cls1, directions = d)
    expect_equal(nrow(count_objects(vfile(o$map), 1, connectivity = d)),
                 length(unique(stats::na.omit(terra::values(p, mat = FALSE)))))
  }
  expect_error(count_objects(vfile(o$map), 1, connectivity = 6), class = "rsunet_input_error")
})

test_that("real buildings: count_objects agrees with terra::patches", {
  skip_if_no_rsunet()
  image <- shared_path("nrcan", "massachusetts_22978945_15_rgb.tif")
  polys <- shared_path("nrcan", "massachusetts_22978945_15_buildings.gpkg")
  img <- terra::rast(image)
  b <- terra::rasterize(terra::project(terra::vect(polys), terra::crs(img)), img[[1]],
                        background = 0)
  path <- tempfile(fileext = ".tif")
  terra::writeRaster(b, path, datatype = "INT1U", NAflag = 255, overwrite = TRUE)
  only <- terra::classify(b, cbind(0, NA))
  for (d in c(4, 8)) {
    p <- terra::patches(only, directions = d)
    sizes <- table(terra::values(p, mat = FALSE))
    res <- count_objects(path, 1, connectivity = d)
    expect_gt(nrow(res), 50)
    expect_equal(nrow(res), length(sizes), info = d)
    expect_equal(sort(res$pixels), sort(as.numeric(sizes)), info = d)
    expect_equal(attr(res, "summary")$valid_area_ha, prod(terra::res(img)) * terra::ncell(img) / 1e4,
                 tolerance = 1e-9)
    big <- count_objects(path, 1, connectivity = d, min_pixels = 50)
    expect_equal(nrow(big), sum(sizes >= 50))
  }
})

test_that("polygonize returns sf polygons that rasterize back to the map", {
  skip_if_no_rsunet()
  m <- V()$multi
  out <- tempfile(fileext = ".gpkg")
  p <- polygonize(vfile(m$prediction), out, classes = c("0" = "a", "1" = "b", "2" = "c", "3" = "d"))
  if (requireNamespace("sf", quietly = TRUE)) expect_s3_class(p, "sf")
  expect_true(file.exists(out))
  v <- terra::vect(out)
  expect_equal(sort(unique(v$class_id)), 0:3)
  expect_equal(unique(v$class[v$class_id == 2]), "c")
  r <- terra::rast(vfile(m$prediction))
  back <- terra::rasterize(v, r, field = "class_id")
  expect_equal(terra::values(back, mat = FALSE), terra::values(r, mat = FALSE))
  expect_error(polygonize(vfile(m$prediction), out), class = "rsunet_output_exists_error")
  p8 <- polygonize(vfile(m$prediction), out, connectivity = 8, overwrite = TRUE)
  expect_lt(nrow(p8), nrow(v))
})
