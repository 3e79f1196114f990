# The R suite against the package installed in .rlib (as R CMD check would load it).
library(testthat)
res <- testthat::test_dir("tests/testthat", package = "rsunet", load_package = "installed",
                          reporter = ProgressReporter$new(show_praise = FALSE),
                          stop_on_failure = FALSE)
df <- as.data.frame(res)
failed <- sum(df$failed) + sum(df$error)
cat(sprintf("\ntestthat: %d passed, %d failed, %d skipped\n",
            sum(df$nb) - sum(df$failed) - sum(df$skipped), failed, sum(df$skipped)))
if (failed > 0) quit(status = 1)
