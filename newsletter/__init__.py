"""A self-hostable daily email digest of research papers, ranked against each subscriber's keywords."""

__version__ = "0.1.0"
