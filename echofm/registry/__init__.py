"""The MLflow model registry side of downstream models: registration, the raw-clip pyfunc, promotion."""
