"""fastgw: the fast, dependable LLM gateway."""

__version__ = "0.1.0"
