"""The only package that imports Ray: coordinator, workers, render workers, driver."""
