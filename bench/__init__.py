"""Herald's benchmark suite (issue 6): ``python -m bench`` (``make bench``); see ``bench/__main__.py``.

Every figure is printed next to a baseline measured in the same run, because these machines are
shared and noisy; targets are judged in the table, never asserted. Modules: ``harness`` (the
timed emulator, receivers, manifests), ``baseline`` (the raw notifier), one module per scenario
(``latency``, ``throughput``, ``e2e``, ``scale``), ``receivers`` (receivers in a child process)
and ``report`` (the table).
"""

__all__: list[str] = []
