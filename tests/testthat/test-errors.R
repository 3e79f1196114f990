# The error catalogue (inst/extdata/testvectors/errors.json), run through the R wrappers.
# Mirrors tests/test_errors.py: each case builds its recipe (python/rsunet/errorcases.py)
# in a fresh folder, calls the R function of the same name (or the `rsunet` command) and
# asserts the condition class, that the message names the file or argument, and that no
# file was added, removed or changed (bytes and mtime).

catalogue <- function() {
  jsonlite::fromJSON(file.path(vectors_dir(), "errors.json"), simplifyVector = FALSE)$cases
}

# JSON lists of scalars as R vectors (as a user would pass them); objects stay named lists.
as_r_args <- function(x) {
  if (!is.list(x)) return(x)
  if (is.null(names(x)) && length(x) && all(vapply(x, function(v) !is.list(v) && length(v) == 1, TRUE))) {
    return(unlist(x))
  }
  lapply(x, as_r_args)
}

build_case <- function(case, folder) {
  ec <- reticulate::import("rsunet.errorcases")
  paths <- list()
  for (recipe in unlist(case$recipe)) paths <- utils::modifyList(paths, ec$materialise(recipe, folder))
  paths
}

call_case <- function(case, paths) {
  ec <- reticulate::import("rsunet.errorcases")
  args <- as_r_args(ec$substitute(case$args, paths))
  tryCatch(do.call(getExportedValue("rsunet", case$call), args), error = function(e) e)
}

run_cli <- function(argv) {
  python <- reticulate::py_config()$python
  # R's LD_LIBRARY_PATH (its own lib folder) can shadow the libpython the venv's Python needs
  env <- c("TF_CPP_MIN_LOG_LEVEL=3", "PYTHONWARNINGS=ignore", "LD_LIBRARY_PATH=")
  out <- suppressWarnings(system2(python, c("-m", "rsunet", shQuote(argv)), stdout = FALSE,
                                  stderr = TRUE, env = env))
  noise <- grepl("^(WARNING: All log messages before absl::InitializeLog|[IWE][0-9]{4} )", out)
  list(status = attr(out, "status") %||% 0L, lines = out[!noise & nzchar(out)])
}

`%||%` <- function(a, b) if (is.null(a)) b else a

for (case in Filter(function(c) !identical(c$only, "python"), catalogue())) {
  local({
    case <- case
    test_that(paste("error case", case$id), {
      skip_if_no_rsunet()
      ec <- reticulate::import("rsunet.errorcases", convert = FALSE)
      folder <- file.path(tempfile("case"), "case")
      on.exit(unlink(dirname(folder), recursive = TRUE), add = TRUE)
      paths <- build_case(case, folder)
      before <- ec$snapshot(folder)
      if (!is.null(case$cli)) {
        argv <- unlist(reticulate::import("rsunet.errorcases")$substitute(case$cli, paths))
        res <- run_cli(argv)
        expect_equal(res$status, case$status)
        expect_length(res$lines, 1)
        expect_true(startsWith(res$lines[1], "rsunet: error: "))
        message <- res$lines[1]
      } else {
        if (!is.null(case$before)) {
          earlier <- Filter(function(c) identical(c$id, case$before), catalogue())[[1]]
          expect_s3_class(call_case(earlier, paths), earlier$r)
        }
        err <- call_case(case, paths)
        expect_s3_class(err, case$r)
        expect_s3_class(err, "rsunet_error")
        message <- conditionMessage(err)
      }
      expect_true(grepl(case$message, message, fixed = TRUE), info = message)
      expect_identical(reticulate::py_to_r(ec$changes(folder, before)), list())
    })
  })
}

test_that("the catalogue holds at least 60 cases across every stage", {
  cases <- catalogue()
  stages <- vapply(cases, function(c) c$stage, "")
  expect_gte(length(cases), 60)
  expect_true(all(c("io", "samples", "patches", "split", "training", "baseline", "prediction",
                    "assessment", "workflow", "cli", "r") %in% stages))
})

# ---- quiet nonsense (mirrors the section of tests/test_errors.py) ----------------------

test_that("fractions that do not sum to one are rescaled with an rsunet_warning", {
  skip_if_no_rsunet()
  ec <- reticulate::import("rsunet.errorcases")
  paths <- ec$materialise("patches", file.path(tempfile("case"), "in"))
  # Python's RsunetWarning reaches R as a classed warning, not a line on the console
  expect_warning(split_patches(paths$unsplit, fractions = c(0.5, 0.2), method = "random"),
                 "rescaled", class = "rsunet_warning")
})
