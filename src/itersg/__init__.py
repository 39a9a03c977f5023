"""itersg: reproducible Iterative Scene Graph Generation (IterativeSG) and its backbone study."""

__version__ = "0.1.0"
