"""visionline: MLOps for industrial machine vision."""

__version__ = "0.1.0"
