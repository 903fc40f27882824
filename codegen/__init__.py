"""msuite.codegen: ``msuite generate`` (typed gRPC stubs, wiring, gateway routes, events).

Built on :mod:`msuite.spec`; never imports the runtime. The code it writes
imports the runtime's names (:mod:`msuite.runtime.wiring`), so a rename there
breaks the generated code's tests at once.
"""

from .fresh import is_current
from .generate import Outcome, generate, render
from .protoc import CodegenError

__all__ = ["CodegenError", "Outcome", "generate", "is_current", "render"]
