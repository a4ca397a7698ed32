"""A self-hostable daily email digest of research papers, ranked against each reader's keywords."""

__version__ = "0.1.0"
