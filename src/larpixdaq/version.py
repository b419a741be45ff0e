"""The package version, alone so that any module can name it without importing more."""

__version__ = "0.1.0"
