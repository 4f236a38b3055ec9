"""CharGPT engine: a character-level GPT trained with NumPy on BLAS.

No Qt, no threads, no printing outside ``cli``: a library that a script, a test
or the desktop window drives the same way.
"""

__version__ = "0.1.0"
