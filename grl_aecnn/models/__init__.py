"""Trained artefacts as MLflow Models and Ray-free files: pyfunc wrappers, registry, export."""
