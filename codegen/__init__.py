"""msuite.codegen: ``msuite generate`` (typed gRPC stubs, wiring, events).

Built on :mod:`msuite.spec`; see the code generation issue for its scope.
"""

__all__: list[str] = []
