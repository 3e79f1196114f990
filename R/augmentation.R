#' Augment a patch and its mask with the same geometry
#'
#' Rotation by any angle, zoom in or out, then left-right and up-down flips (one
#' transform: bilinear for the image, nearest for the mask), and brightness and
#' saturation changes, each with its own probability, its amount drawn uniformly in its
#' range; gain, haze and contrast per band (off by default) teach a model that scenes
#' differ in calibration, haze and stretch; stretch (off by default) shows a patch as a
#' per-scene stretch (`normalize = "scene"`) shows a scene that holds only it, a scene of
#' one land cover. The same `seed` gives the same result. This is what [train_unet()] does to
#' every training batch (validation patches are never augmented).
#'
#' Pixels that come from outside the patch (the corners a rotation uncovers, the border
#' a zoom-out leaves) are unknown: their mask is `NA` (255 in arrays), never a class, and
#' their image value is `NA` (or `nodata`). Saturation is defined for any band count:
#' each pixel's deviation from its own mean over the bands is multiplied by the factor,
#' `x_b' = m + f (x_b - m)` (for RGB the usual saturation change; one band is left
#' unchanged). Nodata pixels stay nodata.
#'
#' @param image a SpatRaster (a patch, e.g. from [read_patch()]; `NA` is nodata) or an
#'   array `(rows, cols, bands)`.
#' @param mask a one-layer SpatRaster or a matrix `(rows, cols)` of class ids (`NA` or
#'   255 = unknown).
#' @param seed integer random seed.
#' @param rotation range of rotation angles in degrees, e.g. `c(0, 360)`.
#' @param p_rotation probability of a rotation.
#' @param p_hflip probability of a left-right flip.
#' @param p_vflip probability of an up-down flip.
#' @param zoom range of zoom factors (above 1 zooms in).
#' @param p_zoom probability of a zoom.
#' @param brightness range of brightness factors (every band multiplied).
#' @param p_brightness probability of a brightness change.
#' @param saturation range of saturation factors.
#' @param p_saturation probability of a saturation change.
#' @param gain range of per-band gain factors (each band multiplied by its own draw).
#' @param p_gain probability of a gain change.
#' @param haze range of per-band offsets as fractions of the band's mean (each band
#'   shifted by its own draw).
#' @param p_haze probability of a haze change.
#' @param contrast range of contrast factors (each pixel's deviation from the patch's
#'   band means multiplied by one draw).
#' @param p_contrast probability of a contrast change.
#' @param stretch range of stretch mixes, 0 (the patch as it is) to 1 (each band moved
#'   to the input's mean and its spread around the patch's own mean scaled to the
#'   input's standard deviation). A lone patch is its own reference, so it is unchanged;
#'   [train_unet()] stretches towards the training patches' mean and spread.
#' @param p_stretch probability of a stretch.
#' @param nodata for arrays: the value that marks nodata pixels (kept, and given to fill
#'   pixels); SpatRasters use `NA`.
#' @return A list with `image` and `mask`, of the input's kind: SpatRasters on the
#'   input's extent and CRS (unknown = `NA`), or an array and an integer matrix
#'   (unknown = 255).
#' @template example-patches
#' @examplesIf rsunet_available()
#' p <- read_patch(patches, index$patch_id[1])
#' a <- augment(p$image, p$mask, seed = 1, p_rotation = 1)
#' terra::plot(a$mask)
#' @export
augment <- function(image, mask, seed = 0, rotation = c(0, 360), p_rotation = 0.5,
                    p_hflip = 0.5, p_vflip = 0.5, zoom = c(0.9, 1.1), p_zoom = 0.5,
                    brightness = c(0.9, 1.1), p_brightness = 0.5, saturation = c(0.9, 1.1),
                    p_saturation = 0.5, gain = c(0.8, 1.25), p_gain = 0, haze = c(-0.1, 0.1),
                    p_haze = 0, contrast = c(0.7, 1.4), p_contrast = 0, stretch = c(0, 1),
                    p_stretch = 0, nodata = NULL) {
  spatial <- inherits(image, "SpatRaster")
  values <- if (spatial) terra::as.array(image) else image
  if (length(dim(values)) == 2) dim(values) <- c(dim(values), 1L)
  labels <- if (inherits(mask, "SpatRaster")) terra::as.matrix(mask, wide = TRUE) else as.matrix(mask)
  labels[is.na(labels)] <- 255
  if (spatial) {
    nodata <- NaN
    values[is.na(values)] <- NaN
  }
  np <- reticulate::import("numpy", convert = FALSE)
  res <- .py_call(.py("augmentation")$augment(
    .to_numpy_bands(values, "float32"), np$asarray(reticulate::r_to_py(labels))$astype("uint8"),
    seed = as.integer(seed), rotation = as.list(as.numeric(rotation)), p_rotation = p_rotation,
    p_hflip = p_hflip, p_vflip = p_vflip, zoom = as.list(as.numeric(zoom)), p_zoom = p_zoom,
    brightness = as.list(as.numeric(brightness)), p_brightness = p_brightness,
    saturation = as.list(as.numeric(saturation)), p_saturation = p_saturation,
    gain = as.list(as.numeric(gain)), p_gain = p_gain, haze = as.list(as.numeric(haze)),
    p_haze = p_haze, contrast = as.list(as.numeric(contrast)), p_contrast = p_contrast,
    stretch = as.list(as.numeric(stretch)), p_stretch = p_stretch,
    nodata = nodata
  ))
  out <- aperm(.r(res[[1]]), c(2, 3, 1))
  m <- .r(res[[2]])
  storage.mode(m) <- "integer"
  if (!spatial) return(list(image = out, mask = m))
  out[is.nan(out)] <- NA
  m[m == 255L] <- NA
  img <- terra::rast(out, extent = terra::ext(image), crs = terra::crs(image))
  names(img) <- names(image)
  msk <- terra::rast(m, extent = terra::ext(image), crs = terra::crs(image))
  names(msk) <- names(mask)[1]
  list(image = img, mask = msk)
}

#' Preview augmentation: patches and augmented versions, masks overlaid
#'
#' Writes a PNG grid: the first row shows a few patches with their mask in colour, each
#' further row an augmented version of them (unknown pixels, such as the rotation fill,
#' are not coloured).
#'
#' @param patches a patch folder from [make_patches()].
#' @param out the PNG to write.
#' @param n how many patches (chosen at random with `seed`) when `patch_ids` is `NULL`.
#' @param versions augmented versions per patch.
#' @param patch_ids the patches to show.
#' @param split choose among this split's patches (`NULL`: any patch).
#' @param seed random seed of the choice and of the augmentation.
#' @param bands 1-based bands shown as RGB (the first three by default).
#' @param alpha mask opacity.
#' @param augmentation `TRUE` (the defaults of [augment()]) or a named list of its
#'   settings, e.g. `list(p_rotation = 1)`.
#' @param overwrite replace an existing `out` (otherwise error class
#'   `rsunet_output_exists_error`).
#' @return `out`, invisibly.
#' @template example-patches
#' @examplesIf rsunet_available()
#' preview_augmentation(patches, file.path(dir, "augmentation.png"), n = 2, versions = 2)
#' @export
preview_augmentation <- function(patches, out, n = 4, versions = 3, patch_ids = NULL,
                                 split = "train", seed = 0, bands = NULL, alpha = 0.4,
                                 augmentation = TRUE, overwrite = FALSE) {
  .py_call(do.call(.py("augmentation")$preview_augmentation, c(
    .py_args(flags = "overwrite", ints = c("n", "versions", "seed"), paths = c("patches", "out")),
    list(patch_ids = if (is.null(patch_ids)) NULL else as.list(as.character(patch_ids)),
         split = split, bands = .as_int_list(bands), alpha = alpha,
         augmentation = .as_augmentation(augmentation))
  )))
  invisible(out)
}

# TRUE/FALSE, or a named list of augment()'s settings (ranges as lists for Python).
.as_augmentation <- function(x) {
  if (is.logical(x)) return(isTRUE(x))
  if (!is.list(x) || is.null(names(x))) {
    .abort("augmentation must be TRUE, FALSE or a named list of augment() settings", "rsunet_input_error")
  }
  lapply(x, function(v) if (length(v) > 1) as.list(as.numeric(v)) else v)
}
