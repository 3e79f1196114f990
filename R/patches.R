#' Cut scenes and their masks into georeferenced patches
#'
#' Cuts one or many scenes and their masks (from [make_mask()]) into `size` x `size`
#' patches, keeping every band in its native data type and each patch's place on Earth,
#' and stores them in `out_dir` as one memory-mapped stack per scene (fast to write and
#' to read for training), with an index table `index.csv` and `patches.json`.
#' Edge policy: `"shift"` moves the last row/column window back inside the scene,
#' `"pad"` keeps it on the stride grid and fills the outside with nodata (mask 255),
#' `"drop"` keeps only whole windows. The folder is built under a temporary name and
#' renamed when complete.
#'
#' @param images raster file(s): a path, a character vector or list of paths, or
#'   SpatRaster(s).
#' @param masks the matching mask file(s), one per image, on each image's exact grid
#'   (otherwise error class `rsunet_grid_mismatch_error`).
#' @param out_dir the folder to write.
#' @param size patch edge in pixels, a positive multiple of 32 (otherwise error class
#'   `rsunet_patch_size_error`).
#' @param stride step between patches (`size` by default; smaller for overlap).
#' @param keep `"all"`, `"positive"` (patches containing a class other than background:
#'   the course's "YES" patches), or class ids/names (patches containing any of them).
#' @param min_labelled keep only patches whose labelled fraction (mask not 255) is at
#'   least this.
#' @param min_valid drop patches whose fraction of valid image pixels is below this.
#' @param edge `"shift"`, `"pad"` or `"drop"`.
#' @param overwrite replace an existing non-empty `out_dir` (otherwise error class
#'   `rsunet_output_exists_error`).
#' @param progress show a progress bar.
#' @param cluster cut the scenes on a dask cluster, one task per scene: `NULL` (here),
#'   `"local"`, `"local:N"` or a scheduler address, as in [predict_raster()]; the same
#'   patch set, byte for byte.
#' @return The patch index, a data.frame (also `out_dir/index.csv`): `patch_id`,
#'   `scene`, `slot`, `col_off`, `row_off` (0-based), `width`, `height`, `left`,
#'   `bottom`, `right`, `top`, `valid_fraction`, `labelled_fraction` and `n_<class id>`
#'   pixel counts.
#' @template example-patches
#' @examplesIf rsunet_available()
#' head(index)
#' @export
make_patches <- function(images, masks, out_dir, size = 128, stride = size, keep = "all",
                         min_labelled = 0, min_valid = 0.5, edge = "shift", overwrite = FALSE,
                         progress = TRUE, cluster = NULL) {
  index <- .py_call(do.call(.py_raw("patches")$make_patches, c(
    list(.as_path_list(images), .as_path_list(masks)),
    .py_args(flags = c("overwrite", "progress"), paths = "out_dir"),
    list(size = .as_whole(size), stride = .as_whole(stride), keep = .as_keep(keep),
         min_labelled = min_labelled, min_valid = min_valid, edge = edge,
         cluster = .as_cluster(cluster))
  )))
  .df_from_py(index)
}

#' Read one patch and its mask
#'
#' @param patches a patch folder written by [make_patches()].
#' @param patch_id the patch's id (column `patch_id` of the index).
#' @return A list with `image` (a SpatRaster with every band, the patch's extent and
#'   CRS; nodata as `NA`) and `mask` (a one-layer SpatRaster; 255 = unknown as `NA`).
#' @template example-patches
#' @examplesIf rsunet_available()
#' p <- read_patch(patches, index$patch_id[1])
#' terra::plotRGB(p$image, stretch = "lin")
#' @export
read_patch <- function(patches, patch_id) {
  res <- .py_call(.py("patches")$read_patch(path.expand(patches), as.character(patch_id)))
  list(image = .rast_from_py(res[[1]]), mask = .rast_from_py(res[[2]]))
}

#' Split patches into train, validation (and test) sets
#'
#' Random, or by spatial blocks (the default): each scene's patches are grouped into
#' blocks of `block` x `block` patch cells and whole blocks are assigned, so
#' neighbouring patches do not leak between the sets. Overlapping patches
#' (`stride < size`) on either side of a block border would still share pixels:
#' `purge` marks every patch that shares a pixel with a patch of a later split in the
#' same scene (train before validation before test) as split `"excluded"`, used for
#' nothing. Without overlap (`stride == size`, `edge` `"pad"` or `"drop"`) nothing is
#' excluded. The same `seed` gives the same split.
#'
#' @param index the patch folder (its `index.csv` is updated atomically) or the index
#'   data.frame.
#' @param fractions shares of train, validation (and test): `c(0.8, 0.2)`, or named,
#'   `c(train = 0.7, validation = 0.15, test = 0.15)` (of the patches before purging).
#' @param method `"blocks"` or `"random"`.
#' @param block block edge in patch cells.
#' @param seed random seed.
#' @param purge exclude patches sharing pixels with a later split: no training patch
#'   then overlaps a validation or test patch. `NULL` (default): `TRUE` for
#'   `"blocks"`, `FALSE` for `"random"`.
#' @return The index data.frame with columns `split` (`"train"`, `"validation"`,
#'   `"test"` or `"excluded"`) and `block`.
#' @template example-patches
#' @examplesIf rsunet_available()
#' table(index$split)
#' @export
split_patches <- function(index, fractions = c(0.8, 0.2), method = "blocks", block = 4, seed = 0,
                          purge = NULL) {
  index <- if (is.character(index)) path.expand(index) else reticulate::r_to_py(as.data.frame(index))
  fr <- if (is.null(names(fractions))) as.list(unname(fractions)) else as.list(fractions)
  .df_from_py(.py_call(.py_raw("patches")$split_patches(
    index, fractions = fr, method = method, block = .as_whole(block), seed = .as_whole(seed),
    purge = if (is.null(purge)) NULL else isTRUE(purge)
  )))
}

#' The patch grid as polygons, for a map
#'
#' @param patches a patch folder.
#' @param out a GeoPackage to write (optional), e.g. to check the split on a map.
#' @param crs the CRS of the polygons (the first scene's by default).
#' @param overwrite replace an existing `out`.
#' @return A `SpatVector` of patch footprints with the index columns (and `split` once
#'   [split_patches()] ran).
#' @template example-patches
#' @examplesIf rsunet_available()
#' g <- patch_grid(patches)
#' terra::plot(g, "split")
#' @export
patch_grid <- function(patches, out = NULL, crs = NULL, overwrite = FALSE) {
  target <- if (is.null(out)) tempfile(fileext = ".gpkg") else path.expand(out)
  # the GeoDataFrame stays in Python (.py_raw): R reads the file it wrote
  .py_call(.py_raw("patches")$patch_grid(path.expand(patches), out = target, crs = crs,
                                     overwrite = isTRUE(overwrite) || is.null(out)))
  terra::vect(target)
}

#' Class balance per split
#'
#' @param patches a patch folder or an index data.frame.
#' @param by the index column to group by (`"split"`; everything is one group `"all"`
#'   before [split_patches()]).
#' @return A data.frame: `group`, `class_id`, `class`, `pixels`, `fraction` (of the
#'   group's labelled pixels), `patches` (holding the class), `n_patches`.
#' @template example-patches
#' @examplesIf rsunet_available()
#' class_balance(patches)
#' @export
class_balance <- function(patches, by = "split") {
  x <- if (is.character(patches)) path.expand(patches) else reticulate::r_to_py(as.data.frame(patches))
  .df_from_py(.py_call(.py_raw("patches")$class_balance(x, by = by)))
}

#' Plot sample patches with their mask overlaid
#'
#' Writes a PNG: each chosen patch (bands stretched to their 2-98 % range) above the
#' same patch with its mask in colour.
#'
#' @param patches a patch folder.
#' @param out the PNG to write.
#' @param n how many patches to pick at random (with `seed`).
#' @param patch_ids the patches to show instead.
#' @param split pick only among this split's patches.
#' @param bands 1-based bands to show as RGB (the first three by default).
#' @param alpha mask opacity.
#' @param seed random seed of the choice.
#' @param overwrite replace an existing `out`.
#' @return `out`, invisibly.
#' @template example-patches
#' @examplesIf rsunet_available()
#' plot_patches(patches, file.path(dir, "patches.png"), n = 4)
#' @export
plot_patches <- function(patches, out, n = 8, patch_ids = NULL, split = NULL, bands = NULL,
                         alpha = 0.4, seed = 0, overwrite = FALSE) {
  .py_call(do.call(.py("patches")$plot_patches, c(
    .py_args(flags = "overwrite", paths = c("patches", "out")),
    list(n = .as_whole(n), patch_ids = if (is.null(patch_ids)) NULL else as.list(as.character(patch_ids)),
         split = split, bands = .as_int_list(bands), alpha = alpha, seed = .as_whole(seed))
  )))
  invisible(out)
}

# ---- helpers ------------------------------------------------------------------------------

.as_path_list <- function(x) {
  if (inherits(x, "SpatRaster")) x <- list(x)
  # unnamed: a named list would reach Python as a dict (names from sapply/vapply)
  as.list(unname(vapply(as.list(x), .as_raster_path, character(1))))
}

.as_whole <- function(x, name = deparse(substitute(x))) if (is.null(x)) NULL else .as_count(x, name)

.as_keep <- function(keep) {
  if (is.character(keep) && length(keep) == 1 && keep %in% c("all", "positive")) return(keep)
  as.list(keep)
}


