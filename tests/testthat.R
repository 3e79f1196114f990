library(testthat)
library(rsunet)
test_check("rsunet")
