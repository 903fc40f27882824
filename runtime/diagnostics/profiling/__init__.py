"""Profiling pages for the node's HTTP server: Python counterparts of Go's net/http/pprof.

The node adds them under ``/debug/`` when the manifest says ``diagnostics.profiling: true``::

    profiling = Profiling(max_seconds=300.0)
    profiling.add_to(app.router, prefix="/debug")  # before the server starts
    ...
    await profiling.close()  # on node stop

Every page is a GET; the defaults are in brackets (``/debug`` is the ``prefix`` of :meth:`Profiling.add_to`):

=============================  =========================================================================
Route                          Answer and parameters
=============================  =========================================================================
``/debug/`` (and ``/debug``)   This list as plain text.
``/debug/tasks``               Every asyncio task of the running loop: name, coroutine, state
                               (``pending``, ``cancelling``, ``done``), what it awaits, its await stack;
                               the request's own task is marked. ``format=text|json`` [text].
``/debug/threads``             The stack of every Python thread (``sys._current_frames()``) with the
                               name, idents and daemon flag of ``threading.enumerate()``; the event-loop
                               thread is marked. ``format=text|json`` [text].
``/debug/profile``             cProfile of the event-loop thread for ``seconds``.
                               ``seconds=S`` [30; fractional allowed; at most ``max_seconds``];
                               ``format=pstats|text`` [pstats]; for ``text``:
                               ``sort=cumulative|tottime|calls`` [cumulative], ``limit=N`` [50].
``/debug/profile/collapsed``   A sampling profile of *all* threads, as folded-stacks text.
                               ``seconds=S`` [30]; ``hz=H`` [100; 1..1000]; ``lines=true|false`` [true].
``/debug/heap``                A tracemalloc summary. ``seconds=S`` [30; 0 allowed when tracemalloc
                               already traces]; ``limit=N`` [50]; ``group=lineno|filename|traceback``
                               [lineno]; ``frames=N`` [1, or 16 with ``group=traceback``; 1..100];
                               ``format=text|json`` [text].
=============================  =========================================================================

Details:

* ``profile`` — ``cProfile`` only sees the thread it is enabled in, here the event-loop thread (every
  coroutine and callback of the node, not its worker threads; use ``profile/collapsed`` for those).
  ``format=pstats`` is the binary file ``Profile.dump_stats`` writes (a marshalled stats dict), served as
  ``application/octet-stream`` with a ``Content-Disposition`` file name: read it with ``pstats.Stats``,
  ``python -m pstats`` or snakeviz. ``format=text`` is the ``pstats`` report of the top ``limit``
  functions. If another profiler (``sys.setprofile``) is already active on the loop thread the answer is
  409.
* ``profile/collapsed`` — a daemon thread named :data:`SAMPLER_THREAD_NAME` reads
  ``sys._current_frames()`` ``hz`` times a second (wall clock: idle threads are sampled too) and skips
  itself. The answer is the "folded stacks" text flamegraph.pl, inferno and speedscope read, one line
  per distinct stack, outermost frame first::

      threadname;qualname (file:line);qualname (file:line);... count

  ``qualname`` is the code object's qualified name (``Class.method``, ``outer.<locals>.inner``),
  ``file`` the source path shortened by the longest ``sys.path`` entry it is under (stdlib and
  site-packages files read ``asyncio/events.py``, ``aiohttp/web.py``), ``line`` the line being run.
  With ``lines=false`` a frame reads ``qualname (file)`` and the samples of a function merge. The count
  follows the *last* space (labels may hold spaces: thread names, paths); ``;`` and line breaks inside
  a thread name or label are replaced by ``_``.
* ``heap`` — if tracemalloc already traces (``PYTHONTRACEMALLOC``, ``-X tracemalloc``, someone's
  ``tracemalloc.start()``), the snapshot is taken at once and ``seconds`` is ignored: the summary covers
  every live traced block. Otherwise tracing starts (with ``frames`` frames per traceback), runs for
  ``seconds`` and stops after the snapshot: the summary covers the blocks allocated during the window and
  still alive at its end. Tracing is only stopped if this page started it. tracemalloc's own and
  importlib's frames are filtered out. The text gives the traced memory (current, peak), the total after
  the filters, then the top ``limit`` statistics (size, count, location).

Rules shared by the pages: a bad parameter (not a number, ``seconds <= 0``, ``seconds > max_seconds``,
an unknown ``format``/``group``/``sort``) answers 400 with the body ``{"code": 3, "message": ...,
"details": []}``. One CPU profile (``profile`` or ``profile/collapsed``) and one heap trace run at a
time: another request answers 409 (code 10, ABORTED) naming what runs. A client that goes away stops its
profile within 0.1 s (or at once when the server cancels handlers on disconnect) and everything is
cleaned up (cProfile disabled, sampler thread joined, tracemalloc stopped if the page started it);
:meth:`Profiling.close` does the same for everything in progress, and those requests answer 503.

The event loop is only held for what must run on its thread (cProfile enable/disable, reading the task
and thread stacks, starting and joining the sampler, starting and stopping tracemalloc): pstats, folding,
tracemalloc snapshots and statistics, and source lookups run in worker threads (``asyncio.to_thread``).
The GIL still applies: a loop that never waits (it polls its selector without sleeping) can starve those
threads and the sampler, which slows the answer or lowers the sample rate, not the node.

The pages show code, stacks and allocation sites: serve them behind the node's authentication.

Modules: ``_pages`` (:class:`Profiling`: routes, one run per slot, the window), ``_params`` (query
parameters), ``_stacks`` (task and thread dumps), ``_cprofile`` (``profile``), ``_sampler``
(``profile/collapsed``), ``_heap`` (``heap``). Refusals are :class:`msuite.runtime.http.errors.Refusal`,
their gRPC codes :class:`msuite.runtime.codes.GrpcCode`.
"""

from ._pages import Profiling
from ._sampler import SAMPLER_THREAD_NAME

__all__ = ["SAMPLER_THREAD_NAME", "Profiling"]
