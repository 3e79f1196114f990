#' Install the Python side of rsunet
#'
#' Creates a Python virtual environment with `reticulate::virtualenv_create()` and
#' installs into it, with `reticulate::virtualenv_install()`, the 'rsunet' Python package
#' that this R package carries (the same version), TensorFlow and Keras, with the pins
#' this machine's 'reticulate' needs (NumPy 1.x under reticulate < 1.38, pandas 2 under
#' < 1.45). Later sessions find the venv by themselves; `RSUNET_PYTHON` overrides it, as
#' `KERAS_PYTHON` does for keras3. Restart R after installing.
#'
#' @param envname folder of the virtual environment (created if missing, updated if not).
#' @param gpu `FALSE` for the CPU build of TensorFlow, `TRUE` for the CUDA one.
#' @param package what pip installs as rsunet: by default the Python package carried by
#'   this R package; or a path to a checkout of the rsunet repository, or a pip requirement.
#' @param python the Python (>= 3.10, with a shared libpython) that creates the venv;
#'   `NULL` lets reticulate choose, as for `virtualenv_create()`.
#' @return The path of the venv's Python, invisibly.
#' @examples
#' \dontrun{
#' install_rsunet()   # then restart R
#' }
#' @export
install_rsunet <- function(envname = .default_venv(), gpu = FALSE, package = .bundled_python(),
                           python = NULL) {
  envname <- path.expand(envname)
  source <- .pip_source(package)
  constraints <- tempfile(fileext = ".txt")
  on.exit(unlink(constraints), add = TRUE)
  writeLines(.bridge_constraints(), constraints)
  spec <- paste0(source, "[", if (isTRUE(gpu)) "gpu" else "cpu", "]")
  .reticulate_step(
    reticulate::virtualenv_create(envname, python = python, packages = FALSE),
    paste("could not create a Python venv at", envname)
  )
  venv_python <- reticulate::virtualenv_python(envname)
  .with_own_libpython(venv_python, .reticulate_step(
    reticulate::virtualenv_install(envname, spec, pip_options = c("-c", shQuote(constraints))),
    paste("pip could not install", spec, "into", envname)
  ))
  message("rsunet installed in ", envname, "; restart R to use it.")
  invisible(venv_python)
}

# The Python package carried by the installed R package (inst/python, made from python/
# by tools/sync_python.sh), or "" in a build that lacks it.
.bundled_python <- function() system.file("python", package = "rsunet")

# What pip should install: the bundled folder is copied to a temporary one first, because
# pip builds in place and an R library may be read-only; another folder (a checkout) is
# used as it is; anything else is a requirement.
.pip_source <- function(package) {
  if (!nzchar(package)) {
    .abort(paste("this installation of the R package carries no Python package",
                 "(inst/python is made by tools/sync_python.sh before R CMD build);",
                 "pass install_rsunet(package = ) a checkout of rsunet"), "rsunet_python_error")
  }
  if (!dir.exists(path.expand(package))) return(package)
  package <- normalizePath(package, winslash = "/")
  if (!identical(package, normalizePath(.bundled_python(), winslash = "/"))) return(package)
  copy <- tempfile("rsunet-python-")
  dir.create(copy)
  file.copy(list.files(package, full.names = TRUE, all.files = TRUE, no.. = TRUE),
            copy, recursive = TRUE)
  normalizePath(copy, winslash = "/")
}

# Run `expr` (which starts `python` as a subprocess) with that Python's own libpython
# first on LD_LIBRARY_PATH. R puts the system library folder first there (/etc/R/ldpaths),
# so a Python built elsewhere (pyenv) may load the system's libpython of the same minor
# version, whose missing symbols break its ssl module: pip could not reach the index.
.with_own_libpython <- function(python, expr) {
  old <- Sys.getenv("LD_LIBRARY_PATH", unset = NA)
  if (.Platform$OS.type != "unix" || is.na(old)) return(expr)
  libdir <- tryCatch(
    system2(python, c("-c", shQuote("import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')")),
            stdout = TRUE, stderr = FALSE),
    error = function(e) "", warning = function(w) ""
  )
  if (length(libdir) != 1 || !nzchar(libdir) || !dir.exists(libdir)) return(expr)
  Sys.setenv(LD_LIBRARY_PATH = paste(libdir, old, sep = ":"))
  on.exit(Sys.setenv(LD_LIBRARY_PATH = old), add = TRUE)
  expr
}

# reticulate reports failures as plain errors: give them rsunet's class and context.
.reticulate_step <- function(expr, what) {
  tryCatch(expr, error = function(e) {
    .abort(paste0(what, ": ", conditionMessage(e)), "rsunet_python_error")
  })
}

# Pins for the environment reticulate binds to (../shared/notes/interop.md): reticulate
# < 1.38 breaks on NumPy 2, < 1.45 on pandas 3; every rasterio 1.5 needs Python >= 3.12.
# tools/setup.sh reads this function too, so the rule lives here only.
.bridge_constraints <- function(reticulate = utils::packageVersion("reticulate")) {
  c(if (reticulate < "1.38") "numpy>=1.26,<2",
    if (reticulate < "1.45") "pandas<3",
    'rasterio<1.5; python_version < "3.12"')
}

#' Is the Python side of rsunet usable?
#'
#' `TRUE` when the 'rsunet' Python package (the version of this R package) imports in the
#' Python that reticulate binds to, Keras is installed there, and arrays cross between R
#' and NumPy intact; `FALSE` otherwise. Never an error: use it to guard code, as the examples do.
#' [rsunet_check()] says what is wrong.
#'
#' @return `TRUE` or `FALSE`.
#' @examples
#' rsunet_available()
#' @export
rsunet_available <- function() {
  isTRUE(tryCatch({
    .py("io")
    has_keras <- !is.null(reticulate::import("importlib.util")$find_spec("keras"))
    has_keras && .array_roundtrip_ok()
  }, error = function(e) FALSE))
}

#' Check the R-Python stack rsunet runs on
#'
#' Reports the versions of R, reticulate, terra, Python, NumPy, TensorFlow, Keras,
#' rasterio and GDAL, and proves that arrays cross between R and Python intact: a
#' non-square 3-D array goes to NumPy and back, and its sum and a corner value are
#' checked on the Python side.
#'
#' @param backend also import Keras and run a tiny convolution.
#' @return A named list of versions and checks, invisibly; printed as a table.
#' @examplesIf rsunet_available()
#' rsunet_check()
#' @export
rsunet_check <- function(backend = TRUE) {
  info <- .py_call(.r(.py("check")$check(import_backend = backend)))
  info <- c(list(R = as.character(getRversion()),
                 reticulate = as.character(utils::packageVersion("reticulate")),
                 terra = as.character(utils::packageVersion("terra"))), info)
  info$array_roundtrip <- .array_roundtrip_ok()
  width <- max(nchar(names(info)))
  for (n in names(info)) cat(formatC(n, width = width), ": ", format(info[[n]]), "\n", sep = "")
  invisible(info)
}

# An asymmetric array R -> NumPy -> R: values, shape and index meaning must survive.
.array_roundtrip_ok <- function() {
  x <- array(seq_len(2 * 3 * 4) * 1.5, dim = c(2, 3, 4))
  np <- reticulate::import("numpy", convert = FALSE)
  a <- reticulate::r_to_py(x)
  same_shape <- identical(unlist(reticulate::py_to_r(a$shape)), c(2L, 3L, 4L))
  corner <- reticulate::py_to_r(a$`__getitem__`(reticulate::tuple(1L, 2L, 3L)))
  back <- reticulate::py_to_r(np$array(a))
  same_shape && isTRUE(all.equal(corner, x[2, 3, 4])) && identical(back, x)
}
