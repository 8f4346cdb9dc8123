"""Independent textbook implementations of the gradsurg methods, used as test oracles.

One module per method module of ``gradsurg/methods`` (``textbook/pcgrad.py`` is the oracle of
``gradsurg/methods/pcgrad.py``, and so on).

Everything here works on the EXPLICIT per-task gradient vectors ``J`` (a ``(T, P)`` float64
tensor or array, one row per task), written straight from the papers' formulas and deliberately
NOT in the Gram-matrix form that ``gradsurg`` uses: agreement between the two is the evidence
that the library's Gram-space rewrite of each algorithm is right. Where a paper solves a
sub-problem, the oracle uses a general-purpose scipy solver (SLSQP, root finding, LP) or brute
force (active-set enumeration), so that it shares no code and no algorithm with the library.

The code favours being obviously correct over being fast (explicit Python loops over tasks,
brute-force enumeration). None of it imports ``gradsurg``.
"""
