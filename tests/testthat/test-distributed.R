# predict_raster(cluster = ) from R: mirrors tests/test_distributed.py. One LocalCluster of
# 2 worker processes on loopback for the file (starting one costs seconds), reached through
# the same Python path; the reference is the one-process output with the scene as one block.

skip_if_no_cluster <- function() {
  skip_if_no_rsunet()
  ok <- tryCatch({ reticulate::import("distributed"); TRUE }, error = function(e) conditionMessage(e))
  if (!isTRUE(ok)) skip_or_fail(paste("Python module 'distributed' is not usable:", ok))
}

cluster_env <- new.env()
shared_client <- function() {
  if (is.null(cluster_env$client)) {
    cluster_env$client <- reticulate::import("rsunet.cluster")$local_cluster(2L, dashboard = FALSE)
  }
  cluster_env$client
}

# Blocks of at most `rows` x `cols` pixels (NULL: the whole scene as one block).
set_blocks <- function(rows, cols) {
  p <- reticulate::import("rsunet.prediction")
  reticulate::py_set_attr(p, "BLOCK_ROWS", if (is.null(rows)) NULL else as.integer(rows))
  reticulate::py_set_attr(p, "BLOCK_COLUMNS", if (is.null(cols)) NULL else as.integer(cols))
}

same_bytes <- function(a, b) {
  identical(readBin(a, "raw", file.size(a)), readBin(b, "raw", file.size(b)))
}

predict_both <- function(model, image, dir, ...) {
  set_blocks(NULL, NULL)
  ref <- predict_raster(model, image, file.path(dir, "ref.tif"), output = "both",
                        progress = FALSE, ...)
  set_blocks(12, 12)  # 3 x 5 blocks of the 37 x 53 vector scene
  on.exit(set_blocks(NULL, 2048))
  out <- predict_raster(model, image, file.path(dir, "out.tif"), output = "both",
                        progress = FALSE, cluster = shared_client(), ...)
  list(ref = c(file.path(dir, "ref.tif"), file.path(dir, "ref_probabilities.tif")),
       out = c(file.path(dir, "out.tif"), file.path(dir, "out_probabilities.tif")))
}

test_that("two workers write the bytes of one process, every blend and with TTA", {
  skip_if_no_cluster()
  v <- vectors("prediction")
  image <- file.path(vectors_dir(), v$image)
  model <- file.path(vectors_dir(), v$model)
  for (case in list(list("hann", FALSE), list("centre", FALSE), list("average", FALSE),
                    list("hann", TRUE))) {
    dir <- tempfile()
    dir.create(dir)
    files <- predict_both(model, image, dir, window = 16, overlap = 5, blend = case[[1]],
                          tta = case[[2]], batch_size = 3)
    for (i in 1:2) expect_true(same_bytes(files$ref[i], files$out[i]), info = paste(case, i))
  }
})

test_that("real chips: one task per scene, same bytes", {
  skip_if_no_cluster()
  images <- head(sort(list.files(shared_path("amazon", "train", "images"), "\\.tiff$",
                                 full.names = TRUE)), 2)
  v <- vectors("prediction")
  keras <- reticulate::import("keras")
  input <- keras$Input(shape = list(NULL, NULL, 3L))
  model <- keras$Model(input, keras$layers$Conv2D(2L, 1L, activation = "softmax")(input))
  ref <- predict_raster(model, images, file.path(tempfile(), "ref"), window = 128,
                        overlap = 32, progress = FALSE)
  out <- predict_raster(model, images, file.path(tempfile(), "out"), window = 128,
                        overlap = 32, progress = FALSE, cluster = shared_client())
  expect_length(out, 2)
  for (i in 1:2) expect_true(same_bytes(ref[i], out[i]))
})

test_that("a worker killed in the middle of a run loses nothing", {
  skip_if_no_cluster()
  v <- vectors("prediction")
  client <- shared_client()
  marker <- tempfile()
  main <- reticulate::py_run_string(paste0(
    "import os\n",
    "def rsunet_die_once(j, marker=", deparse(marker), "):\n",
    "    if j >= 1 and not os.path.exists(marker):\n",
    "        open(marker, 'w').close()\n",
    "        os._exit(1)\n",
    "def rsunet_set_hook(hook):\n",
    "    import rsunet.prediction\n",
    "    rsunet.prediction._after_band = hook\n"))
  client$run(main$rsunet_set_hook, main$rsunet_die_once)
  on.exit(client$run(main$rsunet_set_hook, NULL))
  dir <- tempfile()
  dir.create(dir)
  files <- predict_both(file.path(vectors_dir(), v$model), file.path(vectors_dir(), v$image),
                        dir, window = 16, overlap = 5, blend = "hann")
  expect_true(file.exists(marker))
  for (i in 1:2) expect_true(same_bytes(files$ref[i], files$out[i]))
})

test_that("a bad cluster argument is an input error", {
  skip_if_no_rsunet()
  v <- vectors("prediction")
  expect_error(predict_raster(file.path(vectors_dir(), v$model),
                              file.path(vectors_dir(), v$image), tempfile(fileext = ".tif"),
                              cluster = "local:0", progress = FALSE),
               class = "rsunet_input_error")
  expect_error(predict_raster(file.path(vectors_dir(), v$model),
                              file.path(vectors_dir(), v$image), tempfile(fileext = ".tif"),
                              cluster = 2, progress = FALSE),
               class = "rsunet_input_error")
})

test_that("assess_map on the cluster gives the local confusion matrix", {
  skip_if_no_cluster()
  v <- vectors("assessment")
  maps <- file.path(vectors_dir(), c(v$multi$prediction, v$worked$prediction))
  refs <- file.path(vectors_dir(), c(v$multi$reference, v$worked$reference))
  local <- assess_map(maps, refs)
  spread <- assess_map(maps, refs, cluster = shared_client())
  expect_identical(spread$confusion, local$confusion)
  expect_true(sum(local$confusion) > 0)
})

test_that("make_patches on the cluster writes the local patch set", {
  skip_if_no_cluster()
  dir <- tempfile()
  local <- amazon_patch_set(file.path(dir, "local"), n_images = 2)
  images <- head(sort(list.files(shared_path("amazon", "train", "images"), "\\.tiff$",
                                 full.names = TRUE)), 2)
  masks <- file.path(dir, "local", sub("\\.tiff$", "_mask.tif", basename(images)))
  a <- make_patches(images, masks, file.path(dir, "a"), size = 64, progress = FALSE)
  b <- make_patches(images, masks, file.path(dir, "b"), size = 64, progress = FALSE,
                    cluster = shared_client())
  expect_identical(b, a)
  files <- list.files(file.path(dir, "a"), recursive = TRUE)
  expect_true(length(files) >= 5)
  for (f in files) expect_true(same_bytes(file.path(dir, "a", f), file.path(dir, "b", f)), info = f)
})

# the file's cluster stops here, before the next test file runs
if (!is.null(cluster_env$client)) {
  started <- cluster_env$client$cluster
  cluster_env$client$close()
  started$close()
  cluster_env$client <- NULL
}
