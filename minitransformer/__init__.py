"""minitransformer: Transformers from scratch, with every gradient written by hand.

One code base runs on NumPy (CPU) and CuPy (GPU) through the array module in `backend`.
"""
__version__ = "0.1.0"
