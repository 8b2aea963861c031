"""The HTTP API: the app and its lifespan (app.py), what routes depend on (deps.py), problem+json
(problems.py), and one router per resource (routes_*.py)."""
