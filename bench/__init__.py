"""fastgw's benchmark and load-testing toolkit: mock upstream, load generator, scenario matrix."""

__all__ = ["__version__"]
__version__ = "0.1.0"
