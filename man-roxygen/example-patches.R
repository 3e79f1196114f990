#' @examplesIf rsunet_available()
#' # A small patch set from two of the bundled Amazon chips (forest / non-forest)
#' ex <- example_data()
#' dir <- tempfile("rsunet-example-")
#' images <- ex$train$images[1:2]
#' masks <- file.path(dir, paste0(tools::file_path_sans_ext(basename(images)), "_mask.tif"))
#' for (i in 1:2) {
#'   make_mask(images[i], ex$train$masks[i], masks[i], classes = c("1" = "forest", "2" = "background"))
#' }
#' patches <- file.path(dir, "patches")
#' index <- make_patches(images, masks, patches, size = 128, progress = FALSE)
#' index <- split_patches(patches, fractions = c(0.75, 0.25), method = "random")
