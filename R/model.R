#' A U-Net for any band count (Keras 3)
#'
#' Builds the network [train_unet()] trains: fully convolutional (input
#' `(NULL, NULL, bands)`), so a trained model predicts windows of any size that is a
#' multiple of `2^depth`. Binary problems get one sigmoid output, multi-class ones a
#' softmax over the classes. Most users never call it: [train_unet()] builds it from
#' the same arguments.
#'
#' @param bands number of input bands.
#' @param classes number of classes K (class ids 0 to K-1).
#' @param depth number of poolings.
#' @param filters filters of the first level, doubled at each level down.
#' @param batch_norm batch normalisation after each convolution.
#' @param dropout dropout rate in each block (0 for none).
#' @param activation `"auto"` (sigmoid for two classes, softmax otherwise),
#'   `"sigmoid"` or `"softmax"`.
#' @param mixed_precision `"auto"` (float16 compute where a GPU is present), `TRUE`
#'   or `FALSE`.
#' @return The Python Keras model object (through reticulate), uncompiled: e.g.
#'   `m$summary()`, `m$count_params()`.
#' @examplesIf rsunet_available()
#' m <- unet(bands = 4, classes = 3, depth = 2, filters = 8)
#' m$count_params()
#' @export
unet <- function(bands, classes = 2, depth = 4, filters = 16, batch_norm = TRUE, dropout = 0,
                 activation = "auto", mixed_precision = "auto") {
  .py_call(do.call(.py("model")$unet, c(
    .py_args(flags = "batch_norm", ints = c("bands", "classes", "depth", "filters")),
    list(dropout = as.numeric(dropout), activation = activation, mixed_precision = mixed_precision)
  )))
}
