#' Install the Python side of rsunet
#'
#' Creates a Python virtual environment and installs the 'rsunet' Python package with
#' TensorFlow and Keras into it, with the pins this machine's 'reticulate' needs
#' (NumPy 1.x and pandas 2 for reticulate < 1.38 / 1.45). Later sessions find it
#' automatically; `RSUNET_PYTHON` overrides it, as `KERAS_PYTHON` does for keras3.
#'
#' @param envname folder of the virtual environment to create.
#' @param gpu `FALSE` for the CPU build of TensorFlow, `TRUE` for the CUDA one.
#' @param package what pip installs as rsunet: a path to a checkout of the rsunet
#'   repository, or a pip requirement.
#' @param python the Python (>= 3.10, with a shared libpython) that creates the venv.
#' @return The path of the venv's Python, invisibly.
#' @examples
#' \dontrun{
#' install_rsunet(package = "~/src/rsunet")
#' }
install_rsunet <- function(envname = .default_venv(), gpu = FALSE, package = "rsunet",
                           python = Sys.which("python3")) {
  if (!nzchar(python)) .abort("no python3 found on the PATH", "rsunet_python_error")
  envname <- path.expand(envname)
  if (system2(python, c("-m", "venv", shQuote(envname))) != 0) {
    .abort(paste("could not create a venv at", envname), "rsunet_python_error")
  }
  venv_python <- file.path(envname, "bin", "python")
  constraints <- tempfile(fileext = ".txt")
  writeLines(.bridge_constraints(), constraints)
  extra <- if (isTRUE(gpu)) "gpu" else "cpu"
  spec <- if (dir.exists(path.expand(package))) {
    paste0(normalizePath(package), "[", extra, "]")
  } else {
    paste0(package, "[", extra, "]")
  }
  pip <- c("-m", "pip", "install", "-c", shQuote(constraints), shQuote(spec))
  if (system2(venv_python, pip) != 0) {
    .abort("pip could not install rsunet into the venv", "rsunet_python_error")
  }
  message("rsunet installed in ", envname, "; restart R to use it.")
  invisible(venv_python)
}

# Pins for the environment reticulate binds to (see the interop notes).
.bridge_constraints <- function() {
  ret <- utils::packageVersion("reticulate")
  c(if (ret < "1.38") "numpy>=1.26,<2", if (ret < "1.45") "pandas<3")
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
#' @examples
#' \dontrun{
#' rsunet_check()
#' }
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
