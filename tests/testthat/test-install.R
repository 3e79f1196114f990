# Installing and binding the Python side (issue 17); the full install from a built
# tarball is tools/test_install.sh.

test_that("rsunet_available() answers TRUE or FALSE, never an error", {
  ok <- rsunet_available()
  expect_true(isTRUE(ok) || isFALSE(ok))
  skip_if_no_rsunet()
  expect_true(rsunet_available())
})

test_that("a Python package of another version is an rsunet_python_error naming both", {
  expect_true(rsunet:::.check_python_version("0.1.0", "0.1.0"))
  err <- expect_error(rsunet:::.check_python_version("0.0.9", "0.1.0"),
                      class = "rsunet_python_error")
  expect_match(conditionMessage(err), "0.1.0", fixed = TRUE)
  expect_match(conditionMessage(err), "0.0.9", fixed = TRUE)
  expect_match(conditionMessage(err), "install_rsunet()", fixed = TRUE)
})

test_that("the bound Python package is this R package's version", {
  skip_if_no_rsunet()
  expect_identical(reticulate::import("rsunet")$`__version__`,
                   as.character(utils::packageVersion("rsunet")))
})

test_that("the installed R package carries the Python package of its own version", {
  bundle <- rsunet:::.bundled_python()
  expect_true(nzchar(bundle))
  init <- readLines(file.path(bundle, "python", "rsunet", "__init__.py"))
  expect_true(any(grepl(sprintf('^__version__ = "%s"$', utils::packageVersion("rsunet")), init)))
  expect_true(file.exists(file.path(bundle, "pyproject.toml")))
  # pip builds in place: install_rsunet() hands it a copy, never the library's folder
  copy <- rsunet:::.pip_source(bundle)
  expect_false(identical(normalizePath(copy), normalizePath(bundle)))
  expect_true(file.exists(file.path(copy, "python", "rsunet", "__init__.py")))
  expect_identical(rsunet:::.pip_source("rsunet==0.1.0"), "rsunet==0.1.0")
  expect_error(rsunet:::.pip_source(""), class = "rsunet_python_error")
})

test_that("the bridge pins follow the reticulate version", {
  old <- rsunet:::.bridge_constraints(package_version("1.28"))
  expect_true(all(c("numpy>=1.26,<2", "pandas<3") %in% old))
  new <- rsunet:::.bridge_constraints(package_version("1.45"))
  expect_false(any(grepl("^(numpy|pandas)", new)))
})

test_that("the venv's Python is found where reticulate lays it out", {
  home <- tempfile("rsunet-home-")
  old <- Sys.getenv(c("RSUNET_HOME", "RSUNET_PYTHON"), unset = NA)
  on.exit(for (n in names(old)) if (is.na(old[[n]])) Sys.unsetenv(n) else do.call(Sys.setenv, as.list(old[n])))
  Sys.setenv(RSUNET_HOME = home)
  Sys.unsetenv("RSUNET_PYTHON")
  expect_identical(rsunet:::.rsunet_python(), "")  # no venv yet
  python <- reticulate::virtualenv_python(file.path(home, "venv"))
  dir.create(dirname(python), recursive = TRUE)
  file.create(python)
  expect_identical(rsunet:::.rsunet_python(), python)
  expect_match(python, if (.Platform$OS.type == "windows") "Scripts/python.exe$" else "bin/python$")
})

test_that("example_data() lists the bundled chips and Python finds the same ones", {
  ex <- example_data()
  expect_length(ex$train$images, 10)
  expect_length(ex$test$images, 3)
  expect_true(all(file.exists(c(ex$train$images, ex$train$masks, ex$test$images, ex$test$masks))))
  skip_if_no_rsunet()
  py <- reticulate::import("rsunet.example")$example_data()
  expect_identical(normalizePath(vapply(py$train$images, reticulate::py_str, "")),
                   normalizePath(ex$train$images))
})
