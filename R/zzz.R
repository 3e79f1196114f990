# Binding to Python: delayed, so library(rsunet) never starts Python.
#
# The interpreter is chosen as keras3 does with KERAS_PYTHON: RSUNET_PYTHON if set,
# else the venv install_rsunet() made, else whatever reticulate would pick. The first
# call that needs Python imports the 'rsunet' module and checks that its version is this
# package's; every call goes through .py_call() so Python exceptions become R conditions
# with a class.

.rsunet <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  python <- .rsunet_python()
  if (nzchar(python) && !nzchar(Sys.getenv("RETICULATE_PYTHON"))) {
    Sys.setenv(RETICULATE_PYTHON = python)
  }
  # The example chips: Python finds this package's copy (its own install has none).
  if (!nzchar(Sys.getenv("RSUNET_EXAMPLE_DATA"))) {
    Sys.setenv(RSUNET_EXAMPLE_DATA = system.file("extdata", "amazon", package = pkgname,
                                                 lib.loc = libname))
  }
}

.default_venv <- function() {
  file.path(Sys.getenv("RSUNET_HOME", tools::R_user_dir("rsunet", "data")), "venv")
}

.rsunet_python <- function() {
  python <- Sys.getenv("RSUNET_PYTHON")
  if (nzchar(python)) return(path.expand(python))
  candidate <- reticulate::virtualenv_python(.default_venv())  # bin/ or Scripts/, as reticulate lays it out
  if (file.exists(candidate)) candidate else ""
}

# The Python module rsunet.<name> (or rsunet itself), imported on first use.
.py <- function(name = NULL) {
  module <- if (is.null(name)) "rsunet" else paste0("rsunet.", name)
  cached <- .rsunet[[module]]
  if (!is.null(cached)) return(cached)
  mod <- tryCatch(
    reticulate::import(module),
    error = function(e) {
      .abort(
        paste0(
          "cannot import the Python package 'rsunet' (", conditionMessage(e), ").\n",
          "Python: ", .rsunet_python_label(), ". Run install_rsunet() or set RSUNET_PYTHON ",
          "to a Python that has it."
        ),
        "rsunet_python_error"
      )
    }
  )
  if (is.null(.rsunet$version_checked)) {
    .check_python_version(.r(reticulate::import("rsunet")$`__version__`))
    .rsunet$version_checked <- TRUE
  }
  assign(module, mod, envir = .rsunet)
  mod
}

# The R and the Python package must be the same version: the R functions call the
# Python ones with this version's arguments.
.check_python_version <- function(python_version,
                                  r_version = as.character(utils::packageVersion("rsunet"))) {
  if (identical(python_version, r_version)) return(invisible(TRUE))
  .abort(
    paste0(
      "the R package rsunet is version ", r_version, " but the Python package rsunet in ",
      tryCatch(reticulate::py_exe(), error = function(e) .rsunet_python_label()), " is version ", python_version, ".\n",
      "Run rsunet::install_rsunet() to install the matching Python package, then restart R ",
      "(or set RSUNET_PYTHON to a Python that has rsunet ", r_version, ")."
    ),
    "rsunet_python_error"
  )
}

# rsunet.<name> without automatic conversion: DataFrames are converted column by
# column below (reticulate 1.28's own pandas conversion warns with pandas 2.3).
.py_raw <- function(name) {
  .py(name)  # imports once, and turns a missing Python into an rsunet_python_error
  reticulate::import(paste0("rsunet.", name), convert = FALSE)
}

# A pandas DataFrame as a plain data.frame.
.df_from_py <- function(df) {
  if (!inherits(df, "python.builtin.object")) return(as.data.frame(df, stringsAsFactors = FALSE))
  cols <- reticulate::py_to_r(df$to_dict("list"))
  cols <- lapply(cols, function(v) unlist(lapply(v, function(x) if (is.null(x)) NA else x)))
  as.data.frame(cols, stringsAsFactors = FALSE, check.names = FALSE)
}

.rsunet_python_label <- function() {
  python <- .rsunet_python()
  if (nzchar(python)) python else "none configured (RSUNET_PYTHON is unset)"
}

# A value from Python as an R value, whether or not reticulate converted it already.
.r <- function(x) if (inherits(x, "python.builtin.object")) reticulate::py_to_r(x) else x

# Signal an R error condition with rsunet classes.
.abort <- function(message, class = NULL, call = sys.call(-1), parent = NULL) {
  cond <- structure(
    class = unique(c(class, "rsunet_error", "error", "condition")),
    list(message = message, call = call, parent = parent)
  )
  stop(cond)
}

# "NoOverlapError" -> "rsunet_no_overlap_error"
.py_error_class <- function(type) {
  snake <- tolower(gsub("([a-z0-9])([A-Z])", "\\1_\\2", type))
  paste0("rsunet_", sub("^rsunet_", "", snake))
}

# Evaluate a call into Python; a Python exception becomes an R condition whose class
# names the Python exception (and its rsunet base classes), with the Python message.
# Python's last error is cleared first: an R error (say, a bad argument) raised after an
# earlier, caught Python error must not be reported as that Python error. rsunet's own
# warnings (RsunetWarning) become R warnings of class "rsunet_warning" (reticulate does
# not pass Python warnings on); other libraries' warnings are shown as Python shows them.
.py_call <- function(expr) {
  call <- sys.call(-1)
  # imports rsunet the way every call does; without a Python the call reports it itself
  ours <- tryCatch(.py_raw("errors")$RsunetWarning, error = function(e) NULL)
  if (is.null(ours)) return(.py_call_inner(expr, call))
  reticulate::py_clear_last_error()
  warnings <- reticulate::import("warnings", convert = FALSE)
  recorder <- warnings$catch_warnings(record = TRUE)
  caught <- recorder$`__enter__`()
  warnings$simplefilter("always", ours)
  value <- tryCatch(.py_call_inner(expr, call), finally = recorder$`__exit__`(NULL, NULL, NULL))
  builtins <- reticulate::import_builtins(convert = FALSE)
  for (w in reticulate::py_to_r(builtins$list(caught))) {
    if (reticulate::py_to_r(builtins$issubclass(w$category, ours))) {
      warning(structure(class = c("rsunet_warning", "warning", "condition"),
                        list(message = reticulate::py_str(w$message), call = call)))
    } else {
      warnings$showwarning(w$message, w$category, w$filename, w$lineno)
    }
  }
  value
}

.py_call_inner <- function(expr, call) {
  tryCatch(expr, error = function(e) {
    if (inherits(e, "rsunet_error")) stop(e)
    last <- tryCatch(reticulate::py_last_error(), error = function(e2) NULL)
    if (is.null(last) || is.null(last$type)) stop(e)
    ours <- .py_error_bases(last$type)
    classes <- if (length(ours)) .py_error_class(ours) else "rsunet_python_exception"
    message <- if (!is.null(last$value)) last$value else conditionMessage(e)
    .abort(sub("^[A-Za-z.]*Error: ", "", trimws(message)), classes, call = call)
  })
}

.py_error_bases <- function(type) {
  errors <- tryCatch(reticulate::import("rsunet.errors"), error = function(e) NULL)
  if (is.null(errors) || !reticulate::py_has_attr(errors, type)) return(character())
  mro <- reticulate::py_get_attr(reticulate::py_get_attr(errors, type), "__mro__")
  names <- vapply(reticulate::py_to_r(mro), function(k) {
    reticulate::py_to_r(reticulate::py_get_attr(k, "__name__"))
  }, character(1))
  ours <- vapply(names, function(n) reticulate::py_has_attr(errors, n), logical(1))
  names[ours]
}

# Arguments for Python, converted by kind in the manner of keras3's capture_args(): the
# calling function's arguments named in `flags`, `ints` and `paths` are read from its
# frame (their names are Python's too) and become TRUE/FALSE (isTRUE), integers
# (as.integer) or expanded paths (path.expand); a NULL integer or path stays NULL
# (Python's None). Splice them into the call:
#   do.call(.py("x")$f, c(list(<positional>), .py_args(...), list(<other arguments>)))
.py_args <- function(flags = character(), ints = character(), paths = character(),
                     env = parent.frame()) {
  value <- function(name) get(name, envir = env, inherits = FALSE)
  or_null <- function(f) function(x) if (is.null(x)) NULL else f(x)
  convert <- function(names, f) stats::setNames(lapply(names, function(n) f(value(n))), names)
  c(convert(flags, isTRUE), convert(ints, or_null(as.integer)), convert(paths, or_null(path.expand)))
}
