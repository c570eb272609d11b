"""The version of sluice, where every layer may read it (http.py sends it in its User-Agent)."""

__version__ = "0.1.0"
