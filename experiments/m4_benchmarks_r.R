# M4's SES, Holt and Damped benchmarks computed with R's forecast package, for comparison with the
# project's statsforecast fits (experiments/compare_r_baselines.py reads the CSV files written here).
#
#   Rscript experiments/m4_benchmarks_r.R [m4 folder] [output folder] [frequencies] [limit]
#   Rscript experiments/m4_benchmarks_r.R /path/to/m4 outputs/m4_r Hourly,Weekly
#
# Method, from the published M4 benchmark description:
#   1. seasonality test at 90%: seasonal when n >= 3m and |r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2)/n)
#      (r_k: the sample autocorrelations);
#   2. if seasonal: classical multiplicative decomposition, the series divided by its seasonal
#      component, the forecast multiplied by the last m seasonal indices continued;
#   3. on the adjusted series: forecast::ses, forecast::holt(damped = FALSE), holt(damped = TRUE).
# Hourly: h = 48, m = 24. Weekly: h = 13, m = 1 (M4 treated weekly series as non-seasonal).
# Writes <out>/r_forecasts_<freq>.csv (id, method, F1..Fh) and <out>/r_params_<freq>.csv
# (alpha, beta, phi, initial and final level/slope, seasonal flag, fit time) and prints the rate.

suppressPackageStartupMessages(library(forecast))

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else Sys.getenv("SPECDIFFTREE_M4_ROOT", "data/m4")
out <- if (length(args) >= 2) args[2] else "outputs/m4_r"
freqs <- if (length(args) >= 3) strsplit(args[3], ",")[[1]] else c("Hourly", "Weekly")
limit <- if (length(args) >= 4) as.integer(args[4]) else NA
dir.create(out, showWarnings = FALSE, recursive = TRUE)

rules <- list(Hourly = c(h = 48, m = 24), Weekly = c(h = 13, m = 1))

is_seasonal <- function(x, m) {
  n <- length(x)
  if (m <= 1 || n < 3 * m) return(FALSE)
  r <- acf(x, lag.max = m, plot = FALSE)$acf[-1]  # r_1 .. r_m
  limit <- 1.645 * sqrt((1 + 2 * sum(r[seq_len(m - 1)]^2)) / n)
  abs(r[m]) > limit
}

adjust <- function(x, m, h) {
  n <- length(x)
  if (m > 1 && all(x > 0) && is_seasonal(x, m)) {
    s <- as.numeric(decompose(ts(x, frequency = m), type = "multiplicative")$seasonal)
    last <- s[(n - m + 1):n]
    list(y = x / s, si = rep(last, ceiling(h / m))[1:h], seasonal = TRUE)
  } else {
    list(y = x, si = rep(1, h), seasonal = FALSE)
  }
}

par_or_na <- function(p, name) if (name %in% names(p)) unname(p[[name]]) else NA_real_

fit_one <- function(fun, y, h) {
  t0 <- proc.time()[["elapsed"]]
  fc <- fun(y, h)
  dt <- proc.time()[["elapsed"]] - t0
  p <- fc$model$par
  st <- fc$model$states
  list(mean = as.numeric(fc$mean),
       par = c(alpha = par_or_na(p, "alpha"), beta = par_or_na(p, "beta"),
               phi = par_or_na(p, "phi"), l0 = par_or_na(p, "l"), b0 = par_or_na(p, "b"),
               lN = unname(st[nrow(st), "l"]),
               bN = if ("b" %in% colnames(st)) unname(st[nrow(st), "b"]) else NA_real_,
               mse = fc$model$mse, fit_s = dt))
}

methods <- list(
  ses = function(y, h) ses(y, h = h),
  holt = function(y, h) holt(y, h = h, damped = FALSE),
  damped = function(y, h) holt(y, h = h, damped = TRUE)
)

read_rows <- function(path) {
  lines <- readLines(path)[-1]
  lapply(strsplit(lines, ","), function(v) {
    v <- gsub('"', "", v)
    vals <- suppressWarnings(as.numeric(v[-1]))
    list(id = v[1], x = vals[!is.na(vals)])
  })
}

for (freq in freqs) {
  h <- rules[[freq]][["h"]]
  m <- rules[[freq]][["m"]]
  train <- read_rows(file.path(root, paste0(freq, "-train.csv")))
  if (!is.na(limit)) train <- train[seq_len(min(limit, length(train)))]
  fc_rows <- list()
  par_rows <- list()
  t_all <- proc.time()[["elapsed"]]
  for (s in train) {
    a <- adjust(s$x, m, h)
    # the adjusted series keeps the frequency R's ets sees (M4 passed ts objects of frequency m)
    y <- ts(a$y, frequency = m)
    for (name in names(methods)) {
      f <- fit_one(methods[[name]], y, h)
      fc_rows[[length(fc_rows) + 1]] <- c(s$id, name, sprintf("%.15g", f$mean * a$si))
      par_rows[[length(par_rows) + 1]] <- c(s$id, name, a$seasonal, length(s$x),
                                            sprintf("%.15g", f$par))
    }
  }
  elapsed <- proc.time()[["elapsed"]] - t_all
  fc <- do.call(rbind, fc_rows)
  colnames(fc) <- c("id", "method", paste0("F", seq_len(h)))
  pr <- do.call(rbind, par_rows)
  colnames(pr) <- c("id", "method", "seasonal", "n", "alpha", "beta", "phi", "l0", "b0",
                    "lN", "bN", "mse", "fit_s")
  write.csv(fc, file.path(out, paste0("r_forecasts_", tolower(freq), ".csv")), row.names = FALSE)
  write.csv(pr, file.path(out, paste0("r_params_", tolower(freq), ".csv")), row.names = FALSE)
  cat(sprintf("%s: %d series x %d methods in %.1f s (%.3f s per fit); forecast %s\n", freq,
              length(train), length(methods), elapsed, elapsed / (length(train) * length(methods)),
              as.character(packageVersion("forecast"))))
}
