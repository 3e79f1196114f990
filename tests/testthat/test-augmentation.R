# Augmentation from R: mirrors tests/test_augmentation.py on the same vectors (augmentation.json).

off <- list(p_rotation = 0, p_hflip = 0, p_vflip = 0, p_zoom = 0, p_brightness = 0, p_saturation = 0)

# JSON (bands, rows, cols) nested lists -> R array (rows, cols, bands)
bands_array <- function(x) {
  a <- simplify2array(lapply(x, function(b) do.call(rbind, lapply(b, unlist))))
  a
}

test_that("flips and quarter turns match the shared vectors (computed with numpy)", {
  skip_if_no_rsunet()
  v <- vectors("augmentation")
  image <- bands_array(v$image)
  mask <- do.call(rbind, lapply(v$mask, unlist))
  for (case in v$cases) {
    s <- case$settings
    s$rotation <- if (is.null(s$rotation)) c(0, 360) else unlist(s$rotation)
    a <- do.call(augment, c(list(image = image, mask = mask, seed = 3), s))
    expect_equal(a$image, bands_array(case$image), tolerance = 1e-4, ignore_attr = TRUE,
                 info = case$name)
    expect_equal(a$mask, do.call(rbind, lapply(case$mask, unlist)), ignore_attr = TRUE,
                 info = case$name)
  }
})

test_that("rotation fill is unknown (NA), never a class, and the 45-degree share holds", {
  skip_if_no_rsunet()
  f <- vectors("augmentation")$fill_45
  n <- f$size
  img <- terra::rast(array(50, c(n, n, 3)), crs = "EPSG:32622", extent = terra::ext(0, n, 0, n))
  msk <- terra::rast(matrix(1L, n, n), crs = "EPSG:32622", extent = terra::ext(0, n, 0, n))
  s <- f$settings
  s$rotation <- unlist(s$rotation)
  a <- do.call(augment, c(list(image = img, mask = msk, seed = 0), s))
  m <- terra::values(a$mask)[, 1]
  expect_equal(mean(is.na(m)), f$fraction, tolerance = f$tolerance)
  expect_setequal(unique(m[!is.na(m)]), 1)
  expect_true(all(is.na(terra::values(a$image)[is.na(m), ])))
  expect_equal(as.vector(terra::ext(a$mask)), as.vector(terra::ext(msk)))
  for (seed in 1:8) {
    b <- augment(img, msk, seed = seed, p_rotation = 1, p_zoom = 1, zoom = c(0.7, 1.3))
    expect_true(all(terra::values(b$mask)[, 1] %in% c(1, NA)))
  }
})

test_that("gain and haze change each band by its own draw; contrast scales around the band means", {
  skip_if_no_rsunet()
  set.seed(2)
  img <- array(runif(20 * 24 * 3, 20, 200), c(20, 24, 3))
  mask <- matrix(0L, 20, 24)
  centre <- apply(img, 3, mean)
  gains <- hazes <- contrasts <- numeric()
  for (seed in 0:19) {
    g <- do.call(augment, c(list(image = img, mask = mask, seed = seed), modifyList(off, list(p_gain = 1))))
    r <- g$image / img
    per_band <- apply(r, 3, function(b) diff(range(b)))
    expect_lt(max(per_band), 1e-4)
    gains <- c(gains, r[1, 1, ])
    h <- do.call(augment, c(list(image = img, mask = mask, seed = seed), modifyList(off, list(p_haze = 1))))
    d <- h$image - img
    expect_lt(max(apply(d, 3, function(b) diff(range(b)))), 1e-3)
    hazes <- c(hazes, d[1, 1, ] / centre)
    k <- do.call(augment, c(list(image = img, mask = mask, seed = seed), modifyList(off, list(p_contrast = 1))))
    m_in <- apply(img, 3, mean)
    m_out <- apply(k$image, 3, mean)
    expect_equal(m_out, m_in, tolerance = 1e-4)
    dev_in <- sweep(img, 3, m_in)
    dev_out <- sweep(k$image, 3, m_out)
    big <- abs(dev_in) > 5
    f <- dev_out[big] / dev_in[big]
    expect_lt(diff(range(f)), 1e-3)
    contrasts <- c(contrasts, mean(f))
  }
  expect_true(min(gains) >= 0.8 - 1e-5 && max(gains) <= 1.25 + 1e-5 && diff(range(gains)) > 0.25)
  expect_true(min(hazes) >= -0.1 - 1e-5 && max(hazes) <= 0.1 + 1e-5 && diff(range(hazes)) > 0.1)
  expect_true(min(contrasts) >= 0.7 - 1e-4 && max(contrasts) <= 1.4 + 1e-4 && diff(range(contrasts)) > 0.4)
})

test_that("a lone patch is its own stretch reference; a stretch range beyond (0, 1) is refused", {
  skip_if_no_rsunet()
  set.seed(4)
  img <- array(runif(16 * 20 * 2, 20, 200), c(16, 20, 2))
  mask <- matrix(0L, 16, 20)
  s <- do.call(augment, c(list(image = img, mask = mask, seed = 1),
                          modifyList(off, list(p_stretch = 1, stretch = c(1, 1)))))
  expect_equal(s$image, img, tolerance = 1e-5, ignore_attr = TRUE)
  expect_error(augment(img, mask, stretch = c(0.5, 2)), class = "rsunet_input_error")
})

test_that("brightness and saturation stay in their ranges; one band is unchanged", {
  skip_if_no_rsunet()
  set.seed(1)
  img <- array(runif(20 * 24 * 3, 20, 200), c(20, 24, 3))
  mask <- matrix(0L, 20, 24)
  ratios <- sats <- numeric()
  for (seed in 0:19) {
    b <- do.call(augment, c(list(image = img, mask = mask, seed = seed), modifyList(off, list(p_brightness = 1))))
    r <- b$image / img
    expect_lt(diff(range(r)), 1e-4)
    ratios <- c(ratios, mean(r))
    s <- do.call(augment, c(list(image = img, mask = mask, seed = seed), modifyList(off, list(p_saturation = 1))))
    m_in <- apply(img, c(1, 2), mean)
    m_out <- apply(s$image, c(1, 2), mean)
    expect_equal(m_out, m_in, tolerance = 1e-5)
    dev_in <- sweep(img, c(1, 2), m_in)
    dev_out <- sweep(s$image, c(1, 2), m_out)
    big <- abs(dev_in) > 5
    f <- dev_out[big] / dev_in[big]
    expect_lt(diff(range(f)), 1e-3)
    sats <- c(sats, mean(f))
  }
  expect_true(min(ratios) >= 0.9 - 1e-6 && max(ratios) <= 1.1 + 1e-6 && diff(range(ratios)) > 0.1)
  expect_true(min(sats) >= 0.9 - 1e-4 && max(sats) <= 1.1 + 1e-4 && diff(range(sats)) > 0.08)
  one <- img[, , 1, drop = FALSE]
  s1 <- do.call(augment, c(list(image = one, mask = mask, seed = 2), modifyList(off, list(p_saturation = 1))))
  expect_equal(s1$image, one, tolerance = 1e-5, ignore_attr = TRUE)
})

test_that("nodata stays nodata, the same seed gives the same result, bad settings are classed errors", {
  skip_if_no_rsunet()
  set.seed(2)
  img <- array(runif(16 * 16 * 2, 1, 100), c(16, 16, 2))
  img[3:5, 6:9, ] <- -9999
  mask <- matrix(1L, 16, 16)
  a <- do.call(augment, c(list(image = img, mask = mask, seed = 4, nodata = -9999),
                          modifyList(off, list(p_brightness = 1, p_saturation = 1))))
  expect_true(all(a$mask[3:5, 6:9] == 255L))
  expect_true(all(a$image[3:5, 6:9, ] == -9999))
  expect_equal(sum(a$mask == 255L), 12)
  x <- augment(img, mask, seed = 9, nodata = -9999)
  y <- augment(img, mask, seed = 9, nodata = -9999)
  expect_identical(x, y)
  expect_false(identical(x$image, augment(img, mask, seed = 10, nodata = -9999)$image))
  expect_error(augment(img, mask, p_rotation = 2), class = "rsunet_input_error")
})

test_that("preview_augmentation writes a PNG", {
  skip_if_no_rsunet()
  patches <- amazon_patch_set(tempfile("aug"), n_images = 1)
  out <- file.path(tempdir(), "aug-preview.png")
  unlink(out)
  preview_augmentation(patches, out, n = 3, versions = 2, seed = 1)
  expect_identical(readBin(out, "raw", 4), as.raw(c(0x89, 0x50, 0x4e, 0x47)))
  expect_error(preview_augmentation(patches, out, n = 3), class = "rsunet_output_exists_error")
})
