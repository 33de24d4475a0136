"""mlscan: find malicious or sabotaging code in ML repositories and model files, statically."""

__version__ = "0.1.0"
