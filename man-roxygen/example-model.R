#' @examplesIf rsunet_available()
#' # A small U-Net trained for one epoch: it shows the calls, it is no model to map with
#' model <- train_unet(patches, file.path(dir, "unet.keras"), depth = 2, filters = 8,
#'                     epochs = 1, progress = FALSE)
