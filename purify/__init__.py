"""purify: watch feature purification and adversarial robustness happen in two-layer networks.

The pipeline, one module each: :mod:`purify.data` → :mod:`purify.learners` →
:mod:`purify.train` → :mod:`purify.attacks` → :mod:`purify.evaluate` → :mod:`purify.store`
→ :mod:`purify.summary` → :mod:`purify.cli`; :mod:`purify.simulate` runs them in order.
"""

__version__ = "0.1.0"
