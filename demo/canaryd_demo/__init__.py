"""canaryd's demo: the whole system on loopback, with real Prometheus and Alertmanager.

A project of its own (distribution canaryd-demo) that uses canaryd as an operator does: it runs
`canaryd run` with a config it writes, drives and reads it over its HTTP API and /metrics, and adds
`canaryd demo` through the entry-point group `canaryd.commands`.

- `command.py`: `canaryd demo` / `canaryd-demo`, its options, exit codes and signals;
- `settings.py`: the demo's settings, rules/ and canaryd's config;
- `servers.py`: Prometheus, Alertmanager and canaryd as subprocesses;
- `service.py`: the two built-in services (stable and canary) that answer real HTTP requests;
- `traffic.py`: the traffic generator, which plays the mesh: it splits by canaryd's weight and
  sends `x-canary: true` requests to the canary;
- `watch.py`: what the demo reads back (canaryd's API and /metrics, Prometheus' alerts);
- `observe.py`: that state, polled and printed as it changes;
- `scenarios.py`: the good and bad scenarios; `runner.py`: everything, start to finish;
- `report.py`: the lines it prints.
"""
