"""The analytic memory model: specs, catalogs, per-method terms, the estimator. No torch at import."""
