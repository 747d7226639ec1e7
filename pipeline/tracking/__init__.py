"""MLflow and DVC tracking: the shared run, the training callback, dvclive history, the registry,
the served pyfunc, the promotion gate."""
