"""msuite: a Python runtime for distributed services, declared in one ``msuite.yaml``.

Subpackages: :mod:`msuite.spec` (the manifest), :mod:`msuite.codegen`
(``msuite generate``), :mod:`msuite.runtime` (the node and the CLI). This
package imports none of them, so ``import msuite.spec`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
