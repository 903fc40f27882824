"""msuite: a Python runtime for distributed services, declared in one ``msuite.yaml``.

Subpackages: :mod:`msuite.spec` (the manifest), :mod:`msuite.codegen`
(``msuite generate``), :mod:`msuite.runtime` (the node and the CLI). This
package imports none of them, so ``import msuite.spec`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["MsuiteError", "__version__"]


class MsuiteError(Exception):
    """The root of every exception msuite defines (the manifest, code generation, the runtime).

    ``except msuite.MsuiteError`` catches whatever msuite raised on purpose and
    nothing else; ``msuite.runtime.MsuiteError`` is the same class."""
