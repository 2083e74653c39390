"""Feature extractors as scikit-learn transformers."""
