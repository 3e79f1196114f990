# The U-Net and its losses from R: mirrors tests/test_model.py on the same vectors (model.json).

.r_value <- function(x) if (inherits(x, "python.builtin.object")) reticulate::py_to_r(x) else x

test_that("unet is fully convolutional for any band count", {
  skip_if_no_rsunet()
  np <- reticulate::import("numpy", convert = FALSE)
  for (case in list(c(3, 2, 1), c(7, 4, 4))) {
    m <- unet(bands = case[1], classes = case[2], depth = 3, filters = 4)
    shape <- .r_value(m$input_shape)
    expect_equal(shape[[4]], case[1])
    for (size in list(c(32, 32), c(48, 64))) {
      y <- reticulate::py_to_r(np$asarray(m$`__call__`(np$zeros(c(1L, as.integer(size), as.integer(case[1])), "float32"))))
      expect_equal(dim(y), c(1, size, case[3]))
    }
  }
  expect_error(unet(3, 3, activation = "sigmoid"), class = "rsunet_input_error")
})

test_that("losses and metrics ignore 255 and match the shared vectors", {
  skip_if_no_rsunet()
  v <- vectors("model")
  np <- reticulate::import("numpy", convert = FALSE)
  mod <- reticulate::import("rsunet.model", convert = FALSE)
  y <- do.call(rbind, lapply(v$y_true, unlist))
  p <- do.call(rbind, lapply(v$y_pred, unlist))
  yt <- np$asarray(reticulate::r_to_py(array(y, c(1, dim(y), 1))))$astype("uint8")
  yp <- np$asarray(reticulate::r_to_py(array(p, c(1, dim(p), 1))))$astype("float32")
  p2 <- p
  p2[y == 255] <- 0.999
  yp2 <- np$asarray(reticulate::r_to_py(array(p2, c(1, dim(p), 1))))$astype("float32")
  for (name in c("bce_dice", "dice", "weighted_ce", "focal")) {
    w <- if (name == "weighted_ce") unlist(v$class_weights) else NULL
    loss <- mod$make_loss(name, w)
    expect_equal(reticulate::py_to_r(np$asarray(loss$`__call__`(yt, yp))$item()), v[[name]], tolerance = 1e-5, info = name)
    expect_equal(reticulate::py_to_r(np$asarray(loss$`__call__`(yt, yp2))$item()), v[[name]], tolerance = 1e-5, info = name)
  }
  ms <- mod$metrics(2L)
  for (i in 0:2) {
    m <- reticulate::py_get_item(ms, i)
    m$update_state(yt, yp)
    key <- c("accuracy", "f1", "iou")[i + 1]
    expect_equal(reticulate::py_to_r(np$asarray(m$result())$item()), v[[key]], tolerance = 1e-6, info = key)
  }
})
