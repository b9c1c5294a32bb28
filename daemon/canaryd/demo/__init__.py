"""`canaryd demo`: the whole system on loopback, with real Prometheus and Alertmanager.

- `servers.py`: Prometheus and Alertmanager as subprocesses (also used by the tests and bench/);
- `service.py`: the two built-in services (stable and canary) that answer real HTTP requests;
- `traffic.py`: the traffic generator, which plays the mesh: it splits by canaryd's weight and
  sends `x-canary: true` requests to the canary;
- `watch.py`: what the demo reads back (canaryd's API and /metrics, Prometheus' alerts);
- `report.py`: the lines it prints; `runner.py`: the scenarios, start to finish.
"""
