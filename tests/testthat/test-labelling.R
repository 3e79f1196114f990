# Where to label next from R: mirrors tests/test_labelling.py on labelling.json.
# Independent routes: the uncertainty map read with terra, distances by base R.

LV <- function() vectors("labelling")

test_that("suggestions are valid, spread apart, ranked and inside the scene", {
  skip_if_no_rsunet()
  skip_if_not_installed("sf")
  v <- LV()
  path <- file.path(vectors_dir(), v$map)
  u <- terra::rast(path)
  m <- terra::as.matrix(u, wide = TRUE)  # nodata and NaN read as NA
  dir <- tempfile("rsunet-lab-")
  dir.create(dir)
  for (i in seq_along(v$cases)) {
    cs <- v$cases[[i]]
    s <- suggest_labels(u, file.path(dir, paste0(i, ".gpkg")), cs$n, cs$min_distance,
                        shape = cs$shape, size = cs$size, block_rows = 9)
    expect_s3_class(s, "sf")
    expect_true(nrow(s) >= 1 && nrow(s) <= cs$n)
    vals <- m[cbind(s$row + 1, s$col + 1)]
    expect_false(anyNA(vals))                                   # never nodata or NaN
    expect_equal(s$uncertainty, vals, tolerance = 1e-7)
    expect_equal(s$rank, seq_len(nrow(s)))
    expect_true(all(diff(s$uncertainty) <= 0))                  # ranked
    expect_equal(c(s$row[1], s$col[1]), c(v$top$row, v$top$col)) # the most uncertain first
    d <- as.matrix(stats::dist(cbind(s$row, s$col)))
    expect_gte(min(d[upper.tri(d)]), cs$min_distance)          # spread apart
    bb <- sf::st_bbox(s)
    e <- terra::ext(u)
    expect_true(bb[["xmin"]] >= e$xmin && bb[["xmax"]] <= e$xmax && bb[["ymin"]] >= e$ymin && bb[["ymax"]] <= e$ymax)
    if (cs$shape == "box") {
      expect_equal(as.numeric(sf::st_area(s)), rep((cs$size * terra::res(u)[1])^2, nrow(s)))
    }
  }
  expect_error(suggest_labels(u, file.path(dir, "x.gpkg"), 3, 3, shape = "box"), "size",
               class = "rsunet_input_error")
  expect_error(suggest_labels(u, file.path(dir, "1.gpkg"), 3, 3), class = "rsunet_output_exists_error")
})
